// MoE layer: router, aux/z losses, permutation, grouped experts, unpermutation, shared experts.
#include "core/model/moe_layer.h"

#include <cmath>

#include "ops/activation.h"
#include "ops/elementwise.h"
#include "ops/gemm.h"
#include "ops/grouped_gemm.h"
#include "ops/moe.h"
#include "ops/router.h"

namespace moefold::model {
namespace {

// Pairs routed to each expert among tokens [begin, end) of ids (T, K), as f32 for the aux loss.
Tensor CountExperts(const Tensor& ids, int64_t begin, int64_t end, int num_experts) {
  Tensor counts = Tensor::Zeros({num_experts}, DType::kF32);
  const int64_t k = ids.dim(1);
  for (int64_t i = begin * k; i < end * k; ++i) counts.data<float>()[ids.data<int32_t>()[i]] += 1;
  return counts;
}

}  // namespace

MoeLayer::MoeLayer(const ModelSpec& spec, const std::string& prefix, ParameterSet* params)
    : spec_(spec), load_(spec.moe.num_experts, 0) {
  const int64_t e = spec.moe.num_experts, f = spec.moe.expert_ffn, h = spec.hidden;
  const float out_std = spec.init_std / std::sqrt(2.0f * spec.num_layers);
  router_ = params->Add(prefix + ".gate.weight", {e, h}, GradReduction::kDenseDataCpTp,
                        spec.init_std);
  gate_ = params->Add(prefix + ".experts.gate_proj.weight", {e, f, h}, GradReduction::kExpertData,
                      spec.init_std);
  up_ = params->Add(prefix + ".experts.up_proj.weight", {e, f, h}, GradReduction::kExpertData,
                    spec.init_std);
  down_ = params->Add(prefix + ".experts.down_proj.weight", {e, h, f}, GradReduction::kExpertData,
                      out_std);
  for (Parameter* p : {gate_, up_, down_}) p->sharding.expert_dim = 0;
  gate_->sharding.tp_dim = up_->sharding.tp_dim = 1;  // ETP splits F_e
  down_->sharding.tp_dim = 2;
  if (spec.moe.num_shared_experts > 0) {
    const int64_t shared_ffn =
        static_cast<int64_t>(spec.moe.num_shared_experts) *
        (spec.moe.shared_ffn > 0 ? spec.moe.shared_ffn : spec.moe.expert_ffn);
    shared_ = std::make_unique<SwiGluMlp>(spec, prefix + ".shared_experts", shared_ffn, params);
  }
  if (spec.moe.expert_bias) bias_ = Tensor::Zeros({e}, DType::kF32);
}

void MoeLayer::Forward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x,
                       Saved* saved, Tensor* y, ForwardStats* stats) {
  const MoeSpec& moe = spec_.moe;
  const int64_t t = x.dim(0), h = spec_.hidden, e = moe.num_experts, k = moe.top_k;
  const int64_t n = t * k, f = moe.expert_ffn;
  saved->x = x;
  saved->batch = batch.batch();
  saved->seq_len = batch.seq_len();

  // Router in f32 (ALGORITHMS §1).
  saved->logits = Tensor::Empty({t, e}, DType::kF32);
  ops::LinearForward(x, router_->value, &saved->logits, ctx.s());
  RoutingPlan& plan = saved->plan;
  plan.ids = Tensor::Empty({t, k}, DType::kI32);
  plan.weights = Tensor::Empty({t, k}, DType::kF32);
  ops::RouterTopKForward(saved->logits, bias_, moe.topk, &plan.ids, &plan.weights, ctx.s());

  if (moe.aux_type != AuxLossType::kNone && moe.aux_coeff > 0) {
    saved->probs = Tensor::Empty({t, e}, DType::kF32);
    ops::SoftmaxForward(saved->logits, &saved->probs, ctx.s());
    // One aux unit per micro-batch (batch-level) or per sequence (sequence-level).
    const int64_t unit = moe.aux_type == AuxLossType::kBatch ? t : batch.seq_len();
    for (int64_t begin = 0; begin < t; begin += unit) {
      const Tensor counts = CountExperts(plan.ids, begin, begin + unit, moe.num_experts);
      stats->aux_loss_sum += ops::AuxLossForward(saved->probs.Slice(begin, begin + unit), counts,
                                                 unit, k, moe.aux_coeff, ctx.s());
      stats->aux_units += 1;
    }
  }
  if (moe.z_coeff > 0) {
    stats->z_loss_sum += ops::ZLossForward(saved->logits, moe.z_coeff, /*total_tokens=*/1, ctx.s());
  }

  plan.sorted = Tensor::Empty({n}, DType::kI32);
  plan.counts = Tensor::Empty({e}, DType::kI32);
  ops::ComputePermutation(plan.ids, moe.num_experts, &plan.sorted, &plan.counts, ctx.s());
  for (int64_t i = 0; i < e; ++i) load_[i] += plan.counts.data<int32_t>()[i];

  saved->permuted = Tensor::Empty({n, h}, DType::kF32);
  ops::PermuteTokens(x, plan.sorted, moe.top_k, &saved->permuted, ctx.s());
  saved->gate = Tensor::Empty({n, f}, DType::kF32);
  saved->up = Tensor::Empty({n, f}, DType::kF32);
  saved->act = Tensor::Empty({n, f}, DType::kF32);
  saved->expert_out = Tensor::Empty({n, h}, DType::kF32);
  ops::GroupedLinearForward(saved->permuted, gate_->value, plan.counts, &saved->gate, ctx.s());
  ops::GroupedLinearForward(saved->permuted, up_->value, plan.counts, &saved->up, ctx.s());
  ops::SwiGluForward(saved->gate, saved->up, &saved->act, ctx.s());
  ops::GroupedLinearForward(saved->act, down_->value, plan.counts, &saved->expert_out, ctx.s());
  ops::UnpermuteTokens(saved->expert_out, plan.sorted, plan.weights, y, ctx.s());

  if (shared_) {
    Tensor shared_y = Tensor::Empty({t, h}, DType::kF32);
    shared_->Forward(ctx, x, &saved->shared, &shared_y);
    ops::Add(*y, shared_y, y, ctx.s());
  }
}

void MoeLayer::Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y,
                        const BackwardSeeds& seeds, Tensor* d_x) const {
  const MoeSpec& moe = spec_.moe;
  const RoutingPlan& plan = saved.plan;
  const int64_t t = saved.x.dim(0), h = spec_.hidden, e = moe.num_experts, k = moe.top_k;
  const int64_t n = t * k, f = moe.expert_ffn;

  if (shared_) shared_->Backward(ctx, saved.shared, d_y, d_x);

  Tensor d_expert_out = Tensor::Empty({n, h}, DType::kF32);
  Tensor d_weights = Tensor::Empty({t, k}, DType::kF32);
  ops::UnpermuteTokensBackward(d_y, saved.expert_out, plan.sorted, plan.weights, &d_expert_out,
                               &d_weights, ctx.s());
  Tensor d_act = Tensor::Empty({n, f}, DType::kF32);
  ops::GroupedLinearBackward(saved.act, down_->value, plan.counts, d_expert_out, &d_act,
                             &down_->grad, ctx.s());
  Tensor d_gate = Tensor::Empty({n, f}, DType::kF32);
  Tensor d_up = Tensor::Empty({n, f}, DType::kF32);
  ops::SwiGluBackward(saved.gate, saved.up, d_act, &d_gate, &d_up, ctx.s());
  Tensor d_permuted = Tensor::Empty({n, h}, DType::kF32);
  Tensor d_part = Tensor::Empty({n, h}, DType::kF32);
  ops::GroupedLinearBackward(saved.permuted, gate_->value, plan.counts, d_gate, &d_permuted,
                             &gate_->grad, ctx.s());
  ops::GroupedLinearBackward(saved.permuted, up_->value, plan.counts, d_up, &d_part, &up_->grad,
                             ctx.s());
  ops::Add(d_permuted, d_part, &d_permuted, ctx.s());
  Tensor d_tokens = Tensor::Empty({t, h}, DType::kF32);
  ops::PermuteTokensBackward(d_permuted, plan.sorted, moe.top_k, &d_tokens, ctx.s());
  ops::Add(*d_x, d_tokens, d_x, ctx.s());

  // Router: gradients of the routing weights, the aux loss and the z-loss meet in d_logits.
  Tensor d_logits = Tensor::Zeros({t, e}, DType::kF32);
  ops::RouterTopKBackward(saved.logits, plan.ids, plan.weights, moe.topk, d_weights, &d_logits,
                          ctx.s());
  if (saved.probs.defined() && saved.probs.numel() > 0 && seeds.aux_grad_scale != 0.0f) {
    const int64_t unit = moe.aux_type == AuxLossType::kBatch ? t : saved.seq_len;
    for (int64_t begin = 0; begin < t; begin += unit) {
      const Tensor counts = CountExperts(plan.ids, begin, begin + unit, moe.num_experts);
      Tensor d_logits_unit = d_logits.Slice(begin, begin + unit);
      ops::AuxLossBackward(saved.probs.Slice(begin, begin + unit), counts, unit, k, moe.aux_coeff,
                           seeds.aux_grad_scale, &d_logits_unit, ctx.s());
    }
  }
  if (moe.z_coeff > 0 && seeds.z_grad_scale != 0.0f) {
    ops::ZLossBackward(saved.logits, moe.z_coeff, /*total_tokens=*/1, seeds.z_grad_scale,
                       &d_logits, ctx.s());
  }
  Tensor d_router_x = Tensor::Empty({t, h}, DType::kF32);
  ops::LinearBackward(saved.x, router_->value, d_logits, &d_router_x, &router_->grad, ctx.s());
  ops::Add(*d_x, d_router_x, d_x, ctx.s());
}

void MoeLayer::ResetLoad() { std::fill(load_.begin(), load_.end(), 0); }

void MoeLayer::UpdateExpertBias(float rate) {
  if (!bias_.defined() || bias_.numel() == 0) return;
  double mean = 0;
  for (int64_t c : load_) mean += static_cast<double>(c);
  mean /= static_cast<double>(load_.size());
  for (size_t i = 0; i < load_.size(); ++i) {
    const double diff = mean - static_cast<double>(load_[i]);
    bias_.data<float>()[i] += rate * static_cast<float>((diff > 0) - (diff < 0));
  }
}

}  // namespace moefold::model
