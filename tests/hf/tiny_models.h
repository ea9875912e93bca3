// Tiny models of each Hugging Face family moefold exchanges (core/hf/family.h), shared by the
// export/import tests and hf_fixture (the Python checks): weights of std 0.1, so routing and
// logits are far from uniform.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/model/model_spec.h"

namespace moefold::hf {

// "mixtral": 2 MoE layers, renormalised softmax, untied, V = 37 (odd: TP 2 splits it 19 + 18);
// "qwen2_moe": a dense first layer, softmax without renormalisation, tied embeddings;
// "glm4_moe": 3 layers (dense first), sigmoid with renormalisation and scaling 2.5, a shared expert.
absl::StatusOr<model::ModelSpec> TinyFamilySpec(const std::string& family);

}  // namespace moefold::hf
