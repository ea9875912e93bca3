// The tiny family models of tests/hf.
#include "tests/hf/tiny_models.h"

namespace moefold::hf {

absl::StatusOr<model::ModelSpec> TinyFamilySpec(const std::string& family) {
  model::ModelSpec spec;
  spec.vocab = 37;
  spec.hidden = 16;
  spec.num_layers = 2;
  spec.num_heads = 4;
  spec.num_kv_heads = 2;
  spec.head_dim = 4;
  spec.ffn = 24;
  spec.rope_theta = 10000.0f;
  spec.norm_eps = 1e-5f;
  spec.init_std = 0.1f;
  spec.moe.num_experts = 4;
  spec.moe.top_k = 2;
  spec.moe.topk.k = 2;
  spec.moe.expert_ffn = 8;
  spec.moe_layer = {true, true};
  if (family == "qwen2_moe") {
    spec.moe_layer = {false, true};
    spec.moe.topk.score = ops::ScoreFunction::kSoftmaxPre;
    spec.tie_embeddings = true;
  } else if (family == "glm4_moe") {
    spec.num_layers = 3;
    spec.moe_layer = {false, true, true};
    spec.moe.topk.score = ops::ScoreFunction::kSigmoid;
    spec.moe.topk.normalize = true;
    spec.moe.topk.scaling_factor = 2.5f;
    spec.moe.num_shared_experts = 1;
  } else if (family != "mixtral") {
    return absl::InvalidArgumentError("unknown family " + family);
  }
  return spec;
}

}  // namespace moefold::hf
