// Config → ModelSpec, and the list of features not built yet.
#include "core/train/model_from_config.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace moefold::train {

absl::StatusOr<model::ModelSpec> ModelSpecFromConfig(const config::ExperimentConfig& config) {
  const auto& m = config.model();
  const auto& moe = m.moe();
  model::ModelSpec spec;
  spec.vocab = m.vocab_size();
  spec.hidden = m.hidden_size();
  spec.num_layers = m.num_layers();
  spec.num_heads = m.num_heads();
  spec.num_kv_heads = m.num_kv_heads();
  spec.head_dim = m.head_dim() > 0 ? m.head_dim() : m.hidden_size() / std::max(1, m.num_heads());
  spec.ffn = m.ffn_hidden_size();
  spec.rope_theta = m.rope_theta();
  spec.norm_eps = m.norm_eps();
  spec.init_std = m.init_std();
  spec.tie_embeddings = m.tie_embeddings();
  for (int l = 0; l < spec.num_layers; ++l) {
    const bool is_moe = moe.num_experts() > 0 && moe.layer_freq() > 0 &&
                        l >= moe.first_dense_layers() &&
                        (l - moe.first_dense_layers()) % moe.layer_freq() == 0;
    spec.moe_layer.push_back(is_moe);
  }
  auto& ms = spec.moe;
  ms.num_experts = moe.num_experts();
  ms.top_k = moe.top_k();
  ms.expert_ffn = moe.expert_ffn_hidden_size();
  ms.num_shared_experts = moe.num_shared_experts();
  ms.shared_ffn = moe.shared_expert_ffn_hidden_size();
  ms.topk.k = moe.top_k();
  const std::string& score = moe.score_function();
  if (score == "softmax") {
    ms.topk.score = ops::ScoreFunction::kSoftmaxPost;
  } else if (score == "softmax_pre") {
    ms.topk.score = ops::ScoreFunction::kSoftmaxPre;
  } else if (score == "sigmoid") {
    ms.topk.score = ops::ScoreFunction::kSigmoid;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("model.moe.score_function: unknown '", score,
                                                   "' (softmax, softmax_pre, sigmoid)"));
  }
  ms.topk.normalize = moe.normalize_topk();
  ms.topk.scaling_factor = moe.scaling_factor();
  ms.topk.num_groups = moe.num_groups();
  ms.topk.group_topk = moe.group_topk();
  const std::string& aux = moe.aux_loss_type();
  if (aux == "none") {
    ms.aux_type = model::AuxLossType::kNone;
  } else if (aux == "batch") {
    ms.aux_type = model::AuxLossType::kBatch;
  } else if (aux == "seq") {
    ms.aux_type = model::AuxLossType::kSequence;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("model.moe.aux_loss_type: unknown '", aux, "' (none, batch, seq)"));
  }
  ms.aux_coeff = moe.aux_loss_coeff();
  ms.z_coeff = moe.z_loss_coeff();
  ms.expert_bias = moe.expert_bias();
  ms.capacity_factor = moe.capacity_factor();
  ms.drop_policy = moe.drop_policy() == "position" ? model::DropPolicy::kPosition
                                                   : model::DropPolicy::kProbs;
  ms.pad_to_capacity = moe.pad_to_capacity();
  ms.force_balanced_routing = moe.force_balanced_routing();
  ms.dispatch_chunks = moe.dispatch_chunks();
  if (ms.expert_bias && ms.topk.score != ops::ScoreFunction::kSigmoid) {
    return absl::InvalidArgumentError(
        "model.moe.expert_bias needs score_function: sigmoid (DeepSeek-V3's aux-loss-free routing)");
  }
  return spec;
}

}  // namespace moefold::train
