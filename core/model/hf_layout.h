// moefold's fused projections and the Hugging Face tensors they stand for. moefold keeps one QKV
// weight and one gate/up weight per layer (one GEMM each instead of three and two); checkpoints
// exchanged with Hugging Face keep the separate q/k/v and gate/up tensors, so import and export
// split and fuse here. Layouts (global, unsharded):
//   self_attn.qkv_proj.weight        (G, (r+2)·D, H): per KV head g, its r query heads, its key,
//                                    its value (tensor parallelism splits G: whole groups per rank)
//   mlp.gate_up_proj.weight          (2, F, H): [0] gate_proj, [1] up_proj (TP splits F)
//   mlp.experts.gate_up_proj.weight  (E, 2, F, H): per expert, as above (ETP splits F)
//   mlp.shared_experts.gate_up_proj.weight (2, F_s, H)
// Every other parameter has the same name and layout in both.
//
//   for (const HfTensor& t : ToHuggingFace(p->name, whole_value, spec)) Write(t.name, t.value);
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/model/model_spec.h"
#include "core/tensor.h"

namespace moefold::model {

struct HfTensor {
  std::string name;  // e.g. "model.layers.0.self_attn.q_proj.weight"
  Tensor value;      // f32, CPU
};

// The Hugging Face tensors of the moefold parameter `name` with global value `value` (CPU f32):
// qkv_proj → q_proj (Hq·D, H), k_proj (G·D, H), v_proj (G·D, H); gate_up_proj → gate_proj,
// up_proj (F, H); stacked experts → one tensor per expert ("...experts.5.gate_proj.weight");
// anything else → itself.
std::vector<HfTensor> ToHuggingFace(const std::string& name, const Tensor& value,
                                    const ModelSpec& spec);

// The inverse: the global value of moefold parameter `name` (shape `shape`) assembled from the
// Hugging Face tensors `lookup` returns by name. Status: lookup's error, or InvalidArgument naming a
// Hugging Face tensor whose shape does not fit.
absl::StatusOr<Tensor> FromHuggingFace(
    const std::string& name, const Shape& shape, const ModelSpec& spec,
    const std::function<absl::StatusOr<Tensor>(const std::string&)>& lookup);

}  // namespace moefold::model
