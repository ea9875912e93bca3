// Attention sub-layer: the fused QKV projection, its split with RoPE, causal GQA (local or ring),
// the output projection, and their backward, with the TP region mappings around the projections.
#include "core/model/attention_layer.h"

#include <algorithm>
#include <cmath>

#include "core/model/fp8_gather.h"
#include "core/model/fp8_linear.h"
#include "core/model/linear.h"
#include "core/model/recompute_rows.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/fp8_fused.h"
#include "ops/gemm.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "parallel/ring_attention.h"
#include "parallel/tensor_parallel.h"

namespace moefold::model {
namespace {

int64_t MaxPosition(const MicroBatch& batch) {
  const int32_t* p = batch.positions.data<int32_t>();
  return batch.positions.numel() == 0 ? 0 : *std::max_element(p, p + batch.positions.numel());
}

}  // namespace

AttentionLayer::AttentionLayer(const ModelSpec& spec, const ModelParallel& mp,
                               const std::string& prefix, ParameterSet* params, RopeTables* rope)
    : spec_(spec), mp_(mp), rope_(rope) {
  const int64_t h = spec.hidden, d = spec.head_dim;
  MF_CHECK(spec.num_heads % mp.tp_size() == 0 && spec.num_kv_heads % mp.tp_size() == 0)
      << "heads " << spec.num_heads << "/" << spec.num_kv_heads << " over tp " << mp.tp_size()
      << " (Validate refuses this)";
  MF_CHECK(spec.num_heads % spec.num_kv_heads == 0)
      << "query heads " << spec.num_heads << " over KV heads " << spec.num_kv_heads;
  local_heads_ = spec.num_heads / mp.tp_size();
  local_kv_heads_ = spec.num_kv_heads / mp.tp_size();
  const int64_t per_group = spec.num_heads / spec.num_kv_heads;
  const float std = spec.init_std;
  // Output projections are scaled down by sqrt(2L) (GPT-2 / Megatron practice) so the residual stream's
  // variance does not grow with depth.
  const float out_std = std / std::sqrt(2.0f * spec.num_layers);
  norm_ = params->Add(prefix + ".input_layernorm.weight", {h}, mp.NormReduction(), 0.0f,
                      /*weight_decay=*/false, /*init_value=*/1.0f);
  // Column-parallel over the KV-head groups: each TP rank holds whole groups, so its slice has the
  // same layout as the whole.
  wqkv_ = params->Add(prefix + ".self_attn.qkv_proj.weight",
                      {spec.num_kv_heads, (per_group + 2) * d, h}, GradReduction::kDenseDataCp,
                      std, true, 0.0f, mp.Split(0));
  // Row-parallel.
  wo_ = params->Add(prefix + ".self_attn.o_proj.weight", {h, spec.num_heads * d},
                    GradReduction::kDenseDataCp, out_std, true, 0.0f, mp.Split(1));
}

Tensor AttentionLayer::QkvMatrix() const { return wqkv_->compute.Reshape({QkvWidth(), spec_.hidden}); }

absl::Status AttentionLayer::Forward(const StepContext& ctx, const MicroBatch& batch,
                                     const Tensor& x, Saved* saved, Tensor* y) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, d = spec_.head_dim;
  const int64_t hq = local_heads_, hkv = local_kv_heads_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  saved->x = x;
  saved->x_norm = ctx.Act(x.shape());
  saved->rstd = ctx.F32({x.dim(0)});
  // Under an FP8 recipe that allows it the norm writes the qkv GEMM's input in FP8 as well
  // (x_norm stays: the backward reads it) — where no sequence-parallel gather stands between the
  // norm and the GEMM, or where that gather moves FP8 codes (this rank's rows, then gathered).
  Fp8ProducerTarget norm_fp8;
  const bool gathered = mp_.sequence_parallel && !parallel::IsSingleRank(mp_.tp);
  const bool fused =
      ctx.fp8 != nullptr && (!gathered || GathersFp8(ctx, mp_, *wqkv_)) &&
      ctx.fp8->PrepareFusedInput(*wqkv_, x.dim(0), spec_.hidden, ctx.s(), &norm_fp8);
  {
    auto timed = ctx.Profile(OpFamily::kNorm);
    if (fused) {
      MF_RETURN_IF_ERROR(ops::RmsNormFp8(x, norm_->compute, spec_.norm_eps, norm_fp8.Quantize(),
                                         &saved->x_norm, &saved->rstd, ctx.s()));
    } else {
      ops::RmsNormForward(x, norm_->compute, spec_.norm_eps, &saved->x_norm, &saved->rstd,
                          ctx.s());
    }
  }
  const Fp8Operand* qkv_fp8 = fused ? &norm_fp8.operand : nullptr;
  Fp8Operand gathered_fp8;
  if (gathered) {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(GatherProjectionInput(ctx, mp_, *wqkv_, saved->x_norm, qkv_fp8,
                                             &saved->x_full, &saved->x_full_scale_inv));
    qkv_fp8 = InputOperand(saved->x_full, saved->x_full_scale_inv, &gathered_fp8);
  } else {
    saved->x_full = saved->x_norm;
    saved->x_full_scale_inv = Tensor();
  }
  Tensor qkv = ctx.Act({t, QkvWidth()});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    MF_RETURN_IF_ERROR(LinearRows(ctx, *wqkv_, saved->x_full, QkvMatrix(), 0, &qkv, qkv_fp8));
  }
  Tensor q = ctx.Act({t, hq, d}), k = ctx.Act({t, hkv, d}), v = ctx.Act({t, hkv, d});
  {
    auto timed = ctx.Profile(OpFamily::kAttention);
    const Tensor& table = rope_->Get(ctx, MaxPosition(batch));
    ops::QkvRopeForward(qkv, batch.on_device.row_positions, table, &q, &k, &v, ctx.s());
  }
  saved->q = q.Reshape({b, s, hq, d});
  saved->k = k.Reshape({b, s, hkv, d});
  saved->v = v.Reshape({b, s, hkv, d});
  saved->out = ctx.Act({b, s, hq, d});
  saved->lse = ctx.F32({b, hq, s});
  if (mp_.cp_size() > 1) {
    auto timed = ctx.Profile(OpFamily::kAttention);
    MF_RETURN_IF_ERROR(parallel::RingAttentionForward(saved->q, saved->k, saved->v, scale, *mp_.cp,
                                                      &saved->out, &saved->lse, ctx.s(),
                                                      {ctx.profiler, ctx.layer}));
  } else {
    auto timed = ctx.Profile(OpFamily::kAttention);
    ops::AttentionForward(saved->q, saved->k, saved->v, scale, &saved->out, &saved->lse, ctx.s());
  }
  Tensor partial = ctx.Act({t, spec_.hidden});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    MF_RETURN_IF_ERROR(
        LinearRows(ctx, *wo_, saved->out.Reshape({t, hq * d}), wo_->compute, 0, &partial));
  }
  auto timed = ctx.Profile(OpFamily::kCommunication);
  return parallel::TpReduce(partial, mp_.tp, mp_.sequence_parallel, y);
}

absl::Status AttentionLayer::Backward(const StepContext& ctx, const MicroBatch& batch,
                                      const Saved& saved, const Tensor& d_y, Tensor* d_x) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, d = spec_.head_dim;
  const int64_t hq = local_heads_, hkv = local_kv_heads_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  Tensor d_y_full;
  Fp8Operand d_y_fp8;
  bool d_y_quantized = false;
  {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_ASSIGN_OR_RETURN(d_y_quantized,
                        GatherProjectionGrad(ctx, mp_, *wo_, d_y, &d_y_full, &d_y_fp8));
  }
  Tensor d_out = ctx.Act({t, hq * d});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    MF_RETURN_IF_ERROR(LinearGrad(ctx, *wo_, saved.out.Reshape({t, hq * d}), wo_->compute,
                                  d_y_full, &d_out, &wo_->grad, 0.0f,
                                  d_y_quantized ? &d_y_fp8 : nullptr));
  }
  Tensor d_q = ctx.Act({b, s, hq, d}), d_k = ctx.Act({b, s, hkv, d}), d_v = ctx.Act({b, s, hkv, d});
  if (mp_.cp_size() > 1) {
    auto timed = ctx.Profile(OpFamily::kAttention);
    MF_RETURN_IF_ERROR(parallel::RingAttentionBackward(
        saved.q, saved.k, saved.v, saved.out, saved.lse, d_out.Reshape({b, s, hq, d}), scale,
        *mp_.cp, &d_q, &d_k, &d_v, ctx.s(), {ctx.profiler, ctx.layer}));
  } else {
    auto timed = ctx.Profile(OpFamily::kAttention);
    ops::AttentionBackward(saved.q, saved.k, saved.v, saved.out, saved.lse,
                           d_out.Reshape({b, s, hq, d}), scale, &d_q, &d_k, &d_v, ctx.s());
  }
  // The inverse rotations and the fused layout in one pass, then one GEMM for the input gradient
  // and one for the weight gradient.
  Tensor d_qkv = ctx.Act({t, QkvWidth()});
  {
    auto timed = ctx.Profile(OpFamily::kAttention);
    const Tensor& table = rope_->Get(ctx, MaxPosition(batch));
    ops::QkvRopeBackward(d_q.Reshape({t, hq, d}), d_k.Reshape({t, hkv, d}),
                         d_v.Reshape({t, hkv, d}), batch.on_device.row_positions, table, &d_qkv,
                         ctx.s());
  }
  // Each TP rank's heads give a partial d(x_full); TpReduce sums them (and splits along T under
  // SP).
  Tensor d_full = ctx.Act({t, spec_.hidden});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    Tensor d_w = wqkv_->grad.Reshape({QkvWidth(), spec_.hidden});
    Fp8Operand x_fp8;
    MF_RETURN_IF_ERROR(LinearGrad(ctx, *wqkv_, saved.x_full, QkvMatrix(), d_qkv, &d_full, &d_w,
                                  0.0f, nullptr,
                                  InputOperand(saved.x_full, saved.x_full_scale_inv, &x_fp8)));
  }
  Tensor d_norm;
  {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(parallel::TpReduce(d_full, mp_.tp, mp_.sequence_parallel, &d_norm));
  }
  // The branch's input gradient goes straight into the residual stream's (no separate add).
  auto timed = ctx.Profile(OpFamily::kNorm);
  ops::RmsNormBackwardAccumulate(saved.x, norm_->compute, saved.rstd, d_norm, d_x, &norm_->grad,
                                 ctx.s());
  return absl::OkStatus();
}

void AttentionLayer::Saved::AppendRefs(std::vector<SavedRef>* refs) {
  refs->push_back({SavedKind::kLayerInput, &x});
  refs->push_back({SavedKind::kNormOutput, &x_norm});
  refs->push_back({SavedKind::kNormStats, &rstd});
  refs->push_back({SavedKind::kNormOutput, &x_full});
  for (Tensor* t : {&q, &k, &v}) refs->push_back({SavedKind::kAttentionQkv, t});
  // The attention core's outputs: a query row reads every earlier key, so no row range.
  refs->push_back({SavedKind::kAttentionOutput, &out, true, /*row_split=*/false});
  refs->push_back({SavedKind::kAttentionLse, &lse, true, /*row_split=*/false});
}

absl::Status AttentionLayer::Recompute(const StepContext& ctx, const MicroBatch& batch,
                                       Saved* saved) const {
  const int64_t b = batch.batch(), s = batch.seq_len(), t = b * s, d = spec_.head_dim;
  const int64_t hq = local_heads_, hkv = local_kv_heads_;
  MF_CHECK(saved->x.defined()) << "the attention layer's input is the recomputation's start";
  // The norm is row-separable (each row's own sum of squares): only missing rows are recomputed.
  const int64_t n = saved->x.dim(0);
  int64_t first = RecomputeFrom(ctx, {&saved->x_norm, &saved->rstd}, /*split=*/true);
  if (first < n) {
    Tensor x_norm = RecomputeRowsOf(ctx, &saved->x_norm, saved->x.shape(), ctx.act_dtype, first);
    Tensor rstd = RecomputeRowsOf(ctx, &saved->rstd, {n}, DType::kF32, first);
    auto timed = ctx.Profile(OpFamily::kNorm);
    ops::RmsNormForward(saved->x.Slice(first, n), norm_->compute, spec_.norm_eps, &x_norm, &rstd,
                        ctx.s());
  }
  if (!IsComplete(ctx, saved->x_full)) {  // a TP gather (a collective): every row
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(GatherProjectionInput(ctx, mp_, *wqkv_, saved->x_norm, nullptr,
                                             &saved->x_full, &saved->x_full_scale_inv));
  }
  // The QKV projection and RoPE are row-separable (RoPE reads each row's own position).
  first = GemmBlockStart(RecomputeFrom(ctx, {&saved->q, &saved->k, &saved->v}, SplitsGemmRows(ctx)),
                         t);
  if (first < t) {
    Tensor packed = ctx.Act({t - first, QkvWidth()});
    {
      auto timed = ctx.Profile(OpFamily::kGemm);
      Fp8Operand x_fp8;
      MF_RETURN_IF_ERROR(LinearRows(ctx, *wqkv_, saved->x_full, QkvMatrix(), first, &packed,
                                    InputOperand(saved->x_full, saved->x_full_scale_inv, &x_fp8)));
    }
    const DType act = ctx.act_dtype;
    Tensor q = RecomputeRowsOf(ctx, &saved->q, {b, s, hq, d}, act, first).Reshape({t - first, hq, d});
    Tensor k = RecomputeRowsOf(ctx, &saved->k, {b, s, hkv, d}, act, first).Reshape({t - first, hkv, d});
    Tensor v = RecomputeRowsOf(ctx, &saved->v, {b, s, hkv, d}, act, first).Reshape({t - first, hkv, d});
    auto timed = ctx.Profile(OpFamily::kAttention);
    const Tensor& table = rope_->Get(ctx, MaxPosition(batch));
    ops::QkvRopeForward(packed, batch.on_device.row_positions.Slice(first, t), table, &q, &k, &v,
                        ctx.s());
  }
  // The attention core is not row-separable as its kernels run (a query row reads every earlier
  // key, and a row range of (B, S) crosses sequences): its output and lse are recomputed whole.
  if (IsComplete(ctx, saved->out) && IsComplete(ctx, saved->lse)) return absl::OkStatus();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  Tensor out = RecomputeRowsOf(ctx, &saved->out, {b, s, hq, d}, ctx.act_dtype, 0);
  Tensor lse = RecomputeRowsOf(ctx, &saved->lse, {b, hq, s}, DType::kF32, 0);
  auto timed = ctx.Profile(OpFamily::kAttention);
  if (mp_.cp_size() > 1) {
    MF_RETURN_IF_ERROR(parallel::RingAttentionForward(saved->q, saved->k, saved->v, scale, *mp_.cp,
                                                      &out, &lse, ctx.s(),
                                                      {ctx.profiler, ctx.layer}));
  } else {
    ops::AttentionForward(saved->q, saved->k, saved->v, scale, &out, &lse, ctx.s());
  }
  return absl::OkStatus();
}

absl::Status AttentionLayer::OutputForward(const StepContext& ctx, const MicroBatch& batch,
                                           const Saved& saved, int64_t first, Tensor* y) const {
  const int64_t t = batch.batch() * batch.seq_len(), width = local_heads_ * spec_.head_dim;
  MF_CHECK(first == 0 || SplitsOutputRows()) << "a row range of the output needs no TP reduction";
  Tensor partial = ctx.Act({t - first, spec_.hidden});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    MF_RETURN_IF_ERROR(
        LinearRows(ctx, *wo_, saved.out.Reshape({t, width}), wo_->compute, first, &partial));
  }
  auto timed = ctx.Profile(OpFamily::kCommunication);
  return parallel::TpReduce(partial, mp_.tp, mp_.sequence_parallel, y);
}

}  // namespace moefold::model
