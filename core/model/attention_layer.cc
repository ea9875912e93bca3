// Attention sub-layer: projections, RoPE, causal GQA, output projection, and their backward.
#include "core/model/attention_layer.h"

#include <cmath>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/gemm.h"
#include "ops/norm.h"
#include "ops/rope.h"

namespace moefold::model {

AttentionLayer::AttentionLayer(const ModelSpec& spec, const std::string& prefix,
                               ParameterSet* params)
    : spec_(spec) {
  const int64_t h = spec.hidden, d = spec.head_dim;
  const float std = spec.init_std;
  // Output projections are scaled down by sqrt(2L) (GPT-2 / Megatron practice) so the residual stream's
  // variance does not grow with depth.
  const float out_std = std / std::sqrt(2.0f * spec.num_layers);
  norm_ = params->Add(prefix + ".input_layernorm.weight", {h}, GradReduction::kDenseDataCpTp, 0.0f,
                      /*weight_decay=*/false, /*init_value=*/1.0f);
  wq_ = params->Add(prefix + ".self_attn.q_proj.weight", {spec.num_heads * d, h},
                    GradReduction::kDenseDataCp, std);
  wk_ = params->Add(prefix + ".self_attn.k_proj.weight", {spec.num_kv_heads * d, h},
                    GradReduction::kDenseDataCp, std);
  wv_ = params->Add(prefix + ".self_attn.v_proj.weight", {spec.num_kv_heads * d, h},
                    GradReduction::kDenseDataCp, std);
  wo_ = params->Add(prefix + ".self_attn.o_proj.weight", {h, spec.num_heads * d},
                    GradReduction::kDenseDataCp, out_std);
  wq_->sharding.tp_dim = wk_->sharding.tp_dim = wv_->sharding.tp_dim = 0;  // column-parallel
  wo_->sharding.tp_dim = 1;                                                // row-parallel
}

void AttentionLayer::Forward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x,
                             Saved* saved, Tensor* y) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, d = spec_.head_dim;
  const int64_t hq = spec_.num_heads, hkv = spec_.num_kv_heads;
  saved->x = x;
  saved->x_norm = Tensor::Empty({t, spec_.hidden}, DType::kF32);
  saved->rstd = Tensor::Empty({t}, DType::kF32);
  ops::RmsNormForward(x, norm_->value, spec_.norm_eps, &saved->x_norm, &saved->rstd, ctx.s());

  saved->positions = Tensor::Empty({t}, DType::kI32);
  for (int64_t i = 0; i < t; ++i) {
    saved->positions.data<int32_t>()[i] = batch.positions.data<int32_t>()[i % s];
  }
  Tensor q = Tensor::Empty({t, hq * d}, DType::kF32);
  Tensor k = Tensor::Empty({t, hkv * d}, DType::kF32);
  Tensor v = Tensor::Empty({t, hkv * d}, DType::kF32);
  ops::LinearForward(saved->x_norm, wq_->value, &q, ctx.s());
  ops::LinearForward(saved->x_norm, wk_->value, &k, ctx.s());
  ops::LinearForward(saved->x_norm, wv_->value, &v, ctx.s());
  Tensor q3 = q.Reshape({t, hq, d}), k3 = k.Reshape({t, hkv, d});
  ops::RopeForward(q3, saved->positions, spec_.rope_theta, &q3, ctx.s());
  ops::RopeForward(k3, saved->positions, spec_.rope_theta, &k3, ctx.s());
  saved->q = q.Reshape({b, s, hq, d});
  saved->k = k.Reshape({b, s, hkv, d});
  saved->v = v.Reshape({b, s, hkv, d});
  saved->out = Tensor::Empty({b, s, hq, d}, DType::kF32);
  saved->lse = Tensor::Empty({b, hq, s}, DType::kF32);
  ops::AttentionForward(saved->q, saved->k, saved->v, 1.0f / std::sqrt(static_cast<float>(d)),
                        &saved->out, &saved->lse, ctx.s());
  ops::LinearForward(saved->out.Reshape({t, hq * d}), wo_->value, y, ctx.s());
}

void AttentionLayer::Backward(const StepContext& ctx, const MicroBatch& batch, const Saved& saved,
                              const Tensor& d_y, Tensor* d_x) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, d = spec_.head_dim;
  const int64_t hq = spec_.num_heads, hkv = spec_.num_kv_heads;
  Tensor d_out = Tensor::Empty({t, hq * d}, DType::kF32);
  ops::LinearBackward(saved.out.Reshape({t, hq * d}), wo_->value, d_y, &d_out, &wo_->grad, ctx.s());

  Tensor d_q = Tensor::Empty({b, s, hq, d}, DType::kF32);
  Tensor d_k = Tensor::Empty({b, s, hkv, d}, DType::kF32);
  Tensor d_v = Tensor::Empty({b, s, hkv, d}, DType::kF32);
  ops::AttentionBackward(saved.q, saved.k, saved.v, saved.out, saved.lse,
                         d_out.Reshape({b, s, hq, d}), 1.0f / std::sqrt(static_cast<float>(d)), &d_q,
                         &d_k, &d_v, ctx.s());
  Tensor d_q3 = d_q.Reshape({t, hq, d}), d_k3 = d_k.Reshape({t, hkv, d});
  ops::RopeBackward(d_q3, saved.positions, spec_.rope_theta, &d_q3, ctx.s());
  ops::RopeBackward(d_k3, saved.positions, spec_.rope_theta, &d_k3, ctx.s());

  Tensor d_norm = Tensor::Empty({t, spec_.hidden}, DType::kF32);
  Tensor d_part = Tensor::Empty({t, spec_.hidden}, DType::kF32);
  ops::LinearBackward(saved.x_norm, wq_->value, d_q.Reshape({t, hq * d}), &d_norm, &wq_->grad,
                      ctx.s());
  ops::LinearBackward(saved.x_norm, wk_->value, d_k.Reshape({t, hkv * d}), &d_part, &wk_->grad,
                      ctx.s());
  ops::Add(d_norm, d_part, &d_norm, ctx.s());
  ops::LinearBackward(saved.x_norm, wv_->value, d_v.Reshape({t, hkv * d}), &d_part, &wv_->grad,
                      ctx.s());
  ops::Add(d_norm, d_part, &d_norm, ctx.s());
  ops::RmsNormBackward(saved.x, norm_->value, saved.rstd, d_norm, &d_part, &norm_->grad, ctx.s());
  ops::Add(*d_x, d_part, d_x, ctx.s());
}

}  // namespace moefold::model
