// A trainable parameter and the metadata parallelism needs: its Hugging Face-style name, how it is
// sharded, and over which group its gradient is reduced. This table is what makes MoE folding work
// (DESIGN §4): dense weights reduce over DP×CP, expert weights over EDP, and weights replicated across
// TP under sequence parallelism (norms, router) additionally sum over TP.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moefold {

enum class GradReduction {
  kDenseDataCp,     // dense weights: sum over DP×CP
  kDenseDataCpTp,   // replicated across TP under SP (norms, router): also sum over TP
  kExpertData,      // expert weights: sum over EDP
};
absl::string_view GradReductionName(GradReduction reduction);

struct Sharding {
  int tp_dim = -1;          // dimension split over TP (or ETP for experts); -1 = replicated
  int expert_dim = -1;      // dimension that indexes experts in a stacked expert tensor; -1 = none
  int64_t expert_offset = 0;  // global index of the first expert held here
};

struct Parameter {
  std::string name;  // e.g. "model.layers.3.mlp.experts.gate_proj.weight" (stacked experts, see below)
  Tensor value;      // f32 master copy
  Tensor grad;       // f32, same shape; backward accumulates (+=), ZeroGrads() clears
  Sharding sharding;
  GradReduction reduction = GradReduction::kDenseDataCp;
  bool weight_decay = true;  // false for norms
  float init_std = 0.0f;     // N(0, init_std²); 0 = constant init_value
  float init_value = 0.0f;

  // Hugging Face name of one expert's slice of a stacked expert tensor:
  // "model.layers.3.mlp.experts.gate_proj.weight", e=5 -> "model.layers.3.mlp.experts.5.gate_proj.weight".
  std::string ExpertName(int64_t expert) const;
};

// Which data-parallel reduction a parameter's gradient takes part in: dense weights (also the
// TP-replicated ones) reduce over DP×CP, expert weights over EDP.
enum class DataGroup { kDense, kExpert };
DataGroup DataGroupOf(GradReduction reduction);

// A run of one parameter inside a flat buffer.
struct FlatSegment {
  Parameter* param;
  int64_t offset;  // elements from the buffer start
  int64_t numel;
};

// Contiguous f32 storage for the values and gradients of every parameter of one DataGroup, in
// creation order, padded with zeros to a multiple of `align` elements (so it splits evenly into
// ZeRO-1 shards). Parameters' value/grad tensors become views into these buffers.
struct FlatBuffer {
  DataGroup group;
  Tensor values;  // (padded) f32
  Tensor grads;   // (padded) f32
  std::vector<FlatSegment> segments;
  int64_t used = 0;  // elements covered by segments (the rest is padding)
};

// Owns every parameter of a model in creation order (the order defines the RNG subsequence of each
// parameter's initialisation, so initial weights do not depend on the layout).
class ParameterSet {
 public:
  Parameter* Add(std::string name, const Shape& shape, GradReduction reduction, float init_std,
                 bool weight_decay = true, float init_value = 0.0f);
  // Draws every parameter from Philox(seed, subsequence = FNV-1a hash of its name).
  void Initialize(uint64_t seed);
  void ZeroGrads();
  int64_t NumElements() const;
  const std::vector<std::unique_ptr<Parameter>>& params() const { return params_; }
  Parameter* Find(absl::string_view name) const;  // nullptr if absent
  // Moves every parameter's value and grad into flat buffers (one per DataGroup that has
  // parameters), keeping their contents. Call once, after construction; views stay valid for the
  // set's lifetime. align >= 1.
  std::vector<FlatBuffer>& Flatten(int64_t align);
  std::vector<FlatBuffer>& flat_buffers() { return flat_; }

 private:
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<FlatBuffer> flat_;
};

uint64_t HashName(absl::string_view name);  // FNV-1a 64

}  // namespace moefold
