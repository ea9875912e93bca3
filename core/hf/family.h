// The Hugging Face model families moefold exchanges weights with, and what each can represent:
// naming (moefold's Hugging Face-layout names, core/model/hf_layout.h, to the family's), the
// config.json it writes and checks, and every reason a model does not fit. Invariant: a model that
// a family accepts computes the same function under `transformers`' definition of that family.
//
//   MF_ASSIGN_OR_RETURN(Family f, ChooseFamily(spec, "auto"));   // or refused, every reason named
//   const std::string name = ToFamilyName(f, "model.layers.0.mlp.experts.3.gate_proj.weight");
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/model/model_spec.h"

namespace moefold::hf {

enum class Family {
  kMixtral,   // MixtralForCausalLM: block_sparse_moe.gate, experts.N.w1/w2/w3
  kQwen2Moe,  // Qwen2MoeForCausalLM: mlp.gate, mlp.experts.N.{gate,up,down}_proj, dense layers
  kGlm4Moe,   // Glm4MoeForCausalLM, DeepSeek-style: sigmoid routing, mlp.shared_experts, dense first
};
inline constexpr Family kAllFamilies[] = {Family::kMixtral, Family::kQwen2Moe, Family::kGlm4Moe};

absl::string_view FamilyName(Family family);    // "mixtral", "qwen2_moe", "glm4_moe" (model_type)
absl::string_view Architecture(Family family);  // "MixtralForCausalLM", ...
absl::StatusOr<Family> ParseFamily(absl::string_view name);  // a FamilyName

// Every reason `family` cannot represent `spec`, each naming the moefold setting (empty: it can).
std::vector<std::string> FamilyRefusals(const model::ModelSpec& spec, Family family);

// `family` = "auto" picks the first family of kAllFamilies that represents spec; a FamilyName
// picks that one. InvalidArgument listing the reasons (of every family, for "auto") otherwise.
absl::StatusOr<Family> ChooseFamily(const model::ModelSpec& spec, absl::string_view family);

// The family's name of a tensor named in moefold's Hugging Face layout (ToHuggingFace's names):
// Mixtral renames mlp.gate → block_sparse_moe.gate and experts' gate/up/down_proj → w1/w3/w2.
std::string ToFamilyName(Family family, const std::string& name);

// Every tensor a checkpoint of `family` holds for `spec`, with its shape, in the family's naming:
// the split moefold parameters plus the family's own tensors that moefold does not have, which
// export writes with neutral values (see FamilyExtras).
std::vector<std::pair<std::string, Shape>> ExpectedTensors(const model::ModelSpec& spec,
                                                           Family family);

// The family's tensors that moefold has no parameter for, each with the value that makes the
// family compute moefold's function: Qwen2-MoE's shared expert of width 0 and its gate (any value:
// it scales zeros), GLM-4-MoE's e_score_correction_bias (zeros: moefold's routing has no bias in
// the weights) and, without shared experts, a shared expert of width 0. f32 CPU tensors.
std::vector<std::pair<std::string, Tensor>> FamilyExtras(const model::ModelSpec& spec,
                                                         Family family);

// config.json for `spec` as `family` (pretty JSON text); max_positions = max_position_embeddings,
// dtype = the weights' dtype (recorded as torch_dtype).
std::string ConfigJson(const model::ModelSpec& spec, Family family, int64_t max_positions,
                       DType dtype);

// Checks the text of `path` (a config.json) against `spec`: its model_type must be a family that
// represents spec, and every field that determines the model must equal moefold's (a field that is
// absent takes transformers' default). max_position_embeddings must be >= seq_len.
// InvalidArgument listing every disagreement as "PATH KEY hf_value != moefold.field ours".
absl::StatusOr<Family> CheckConfigJson(const std::string& path, const std::string& text,
                                       const model::ModelSpec& spec, int64_t seq_len);

}  // namespace moefold::hf
