// Attention sub-layer: projections, RoPE, causal GQA (local or ring), output projection, and their
// backward, with the TP region mappings around the projections.
#include "core/model/attention_layer.h"

#include <cmath>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/gemm.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "parallel/ring_attention.h"
#include "parallel/tensor_parallel.h"

namespace moefold::model {

AttentionLayer::AttentionLayer(const ModelSpec& spec, const ModelParallel& mp,
                               const std::string& prefix, ParameterSet* params)
    : spec_(spec), mp_(mp) {
  const int64_t h = spec.hidden, d = spec.head_dim;
  MF_CHECK(spec.num_heads % mp.tp_size() == 0 && spec.num_kv_heads % mp.tp_size() == 0)
      << "heads " << spec.num_heads << "/" << spec.num_kv_heads << " over tp " << mp.tp_size()
      << " (Validate refuses this)";
  local_heads_ = spec.num_heads / mp.tp_size();
  local_kv_heads_ = spec.num_kv_heads / mp.tp_size();
  const float std = spec.init_std;
  // Output projections are scaled down by sqrt(2L) (GPT-2 / Megatron practice) so the residual stream's
  // variance does not grow with depth.
  const float out_std = std / std::sqrt(2.0f * spec.num_layers);
  norm_ = params->Add(prefix + ".input_layernorm.weight", {h}, mp.NormReduction(), 0.0f,
                      /*weight_decay=*/false, /*init_value=*/1.0f);
  // Column-parallel: rows are head-major, so an even row split hands each TP rank whole heads.
  wq_ = params->Add(prefix + ".self_attn.q_proj.weight", {spec.num_heads * d, h},
                    GradReduction::kDenseDataCp, std, true, 0.0f, mp.Split(0));
  wk_ = params->Add(prefix + ".self_attn.k_proj.weight", {spec.num_kv_heads * d, h},
                    GradReduction::kDenseDataCp, std, true, 0.0f, mp.Split(0));
  wv_ = params->Add(prefix + ".self_attn.v_proj.weight", {spec.num_kv_heads * d, h},
                    GradReduction::kDenseDataCp, std, true, 0.0f, mp.Split(0));
  // Row-parallel.
  wo_ = params->Add(prefix + ".self_attn.o_proj.weight", {h, spec.num_heads * d},
                    GradReduction::kDenseDataCp, out_std, true, 0.0f, mp.Split(1));
}

absl::Status AttentionLayer::Forward(const StepContext& ctx, const MicroBatch& batch,
                                     const Tensor& x, Saved* saved, Tensor* y) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, d = spec_.head_dim;
  const int64_t hq = local_heads_, hkv = local_kv_heads_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  saved->x = x;
  saved->x_norm = ctx.Act(x.shape());
  saved->rstd = ctx.F32({x.dim(0)});
  ops::RmsNormForward(x, norm_->compute, spec_.norm_eps, &saved->x_norm, &saved->rstd, ctx.s());
  MF_RETURN_IF_ERROR(
      parallel::TpGather(saved->x_norm, mp_.tp, mp_.sequence_parallel, &saved->x_full));

  const Tensor& positions = batch.on_device.row_positions;
  Tensor q = ctx.Act({t, hq * d}), k = ctx.Act({t, hkv * d}), v = ctx.Act({t, hkv * d});
  ops::LinearForward(saved->x_full, wq_->compute, &q, ctx.s());
  ops::LinearForward(saved->x_full, wk_->compute, &k, ctx.s());
  ops::LinearForward(saved->x_full, wv_->compute, &v, ctx.s());
  Tensor q3 = q.Reshape({t, hq, d}), k3 = k.Reshape({t, hkv, d});
  ops::RopeForward(q3, positions, spec_.rope_theta, &q3, ctx.s());
  ops::RopeForward(k3, positions, spec_.rope_theta, &k3, ctx.s());
  saved->q = q.Reshape({b, s, hq, d});
  saved->k = k.Reshape({b, s, hkv, d});
  saved->v = v.Reshape({b, s, hkv, d});
  saved->out = ctx.Act({b, s, hq, d});
  saved->lse = ctx.F32({b, hq, s});
  if (mp_.cp_size() > 1) {
    MF_RETURN_IF_ERROR(parallel::RingAttentionForward(saved->q, saved->k, saved->v,
                                                      batch.positions, scale, *mp_.cp,
                                                      &saved->out, &saved->lse));
  } else {
    ops::AttentionForward(saved->q, saved->k, saved->v, scale, &saved->out, &saved->lse, ctx.s());
  }
  Tensor partial = ctx.Act({t, spec_.hidden});
  ops::LinearForward(saved->out.Reshape({t, hq * d}), wo_->compute, &partial, ctx.s());
  return parallel::TpReduce(partial, mp_.tp, mp_.sequence_parallel, y);
}

absl::Status AttentionLayer::Backward(const StepContext& ctx, const MicroBatch& batch,
                                      const Saved& saved, const Tensor& d_y, Tensor* d_x) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, d = spec_.head_dim;
  const int64_t hq = local_heads_, hkv = local_kv_heads_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  Tensor d_y_full;
  MF_RETURN_IF_ERROR(parallel::TpGather(d_y, mp_.tp, mp_.sequence_parallel, &d_y_full));
  Tensor d_out = ctx.Act({t, hq * d});
  ops::LinearBackward(saved.out.Reshape({t, hq * d}), wo_->compute, d_y_full, &d_out, &wo_->grad,
                      ctx.s());

  Tensor d_q = ctx.Act({b, s, hq, d}), d_k = ctx.Act({b, s, hkv, d}), d_v = ctx.Act({b, s, hkv, d});
  if (mp_.cp_size() > 1) {
    MF_RETURN_IF_ERROR(parallel::RingAttentionBackward(
        saved.q, saved.k, saved.v, batch.positions, saved.out, saved.lse,
        d_out.Reshape({b, s, hq, d}), scale, *mp_.cp, &d_q, &d_k, &d_v));
  } else {
    ops::AttentionBackward(saved.q, saved.k, saved.v, saved.out, saved.lse,
                           d_out.Reshape({b, s, hq, d}), scale, &d_q, &d_k, &d_v, ctx.s());
  }
  const Tensor& positions = batch.on_device.row_positions;
  Tensor d_q3 = d_q.Reshape({t, hq, d}), d_k3 = d_k.Reshape({t, hkv, d});
  ops::RopeBackward(d_q3, positions, spec_.rope_theta, &d_q3, ctx.s());
  ops::RopeBackward(d_k3, positions, spec_.rope_theta, &d_k3, ctx.s());

  // Each TP rank's heads give a partial d(x_full); TpReduce sums them (and splits along T under
  // SP). The three projections' input gradients accumulate in one GEMM chain (beta = 1).
  Tensor d_full = ctx.Act({t, spec_.hidden});
  const Tensor d_q2 = d_q.Reshape({t, hq * d}), d_k2 = d_k.Reshape({t, hkv * d});
  const Tensor d_v2 = d_v.Reshape({t, hkv * d});
  ops::Gemm(d_q2, false, wq_->compute, false, 1.0f, 0.0f, &d_full, ctx.s());
  ops::Gemm(d_k2, false, wk_->compute, false, 1.0f, 1.0f, &d_full, ctx.s());
  ops::Gemm(d_v2, false, wv_->compute, false, 1.0f, 1.0f, &d_full, ctx.s());
  ops::LinearBackward(saved.x_full, wq_->compute, d_q2, nullptr, &wq_->grad, ctx.s());
  ops::LinearBackward(saved.x_full, wk_->compute, d_k2, nullptr, &wk_->grad, ctx.s());
  ops::LinearBackward(saved.x_full, wv_->compute, d_v2, nullptr, &wv_->grad, ctx.s());
  Tensor d_norm;
  MF_RETURN_IF_ERROR(parallel::TpReduce(d_full, mp_.tp, mp_.sequence_parallel, &d_norm));
  Tensor d_in = ctx.Act(saved.x.shape());
  ops::RmsNormBackward(saved.x, norm_->compute, saved.rstd, d_norm, &d_in, &norm_->grad, ctx.s());
  ops::Add(*d_x, d_in, d_x, ctx.s());
  return absl::OkStatus();
}

}  // namespace moefold::model
