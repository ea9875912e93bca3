// SwiGLU MLP forward and backward between the TP region mappings.
#include "core/model/mlp_layer.h"

#include <cmath>

#include "core/model/fp8_gather.h"
#include "core/model/fp8_linear.h"
#include "core/model/linear.h"
#include "core/model/recompute_rows.h"
#include "ops/activation.h"
#include "ops/elementwise.h"
#include "ops/fp8_fused.h"
#include "ops/gemm.h"
#include "parallel/tensor_parallel.h"

namespace moefold::model {

SwiGluMlp::SwiGluMlp(const ModelSpec& spec, const ModelParallel& mp, const std::string& prefix,
                     int64_t ffn, ParameterSet* params)
    : hidden_(spec.hidden), mp_(mp) {
  MF_CHECK_EQ(ffn % mp.tp_size(), 0) << prefix << ": FFN " << ffn << " over tp " << mp.tp_size();
  local_ffn_ = ffn / mp.tp_size();
  const float out_std = spec.init_std / std::sqrt(2.0f * spec.num_layers);
  // Split along F (dimension 1): a rank's slice is its gate rows followed by its up rows, one
  // contiguous (2·F/tp, H) matrix.
  gate_up_ = params->Add(prefix + ".gate_up_proj.weight", {2, ffn, hidden_},
                         GradReduction::kDenseDataCp, spec.init_std, true, 0.0f, mp.Split(1));
  down_ = params->Add(prefix + ".down_proj.weight", {hidden_, ffn}, GradReduction::kDenseDataCp,
                      out_std, true, 0.0f, mp.Split(1));
}

Tensor SwiGluMlp::GateUpMatrix() const {
  return gate_up_->compute.Reshape({2 * local_ffn_, hidden_});
}

bool SwiGluMlp::PrepareFusedInput(const StepContext& ctx, int64_t rows,
                                  Fp8ProducerTarget* target) const {
  const bool gathered = mp_.sequence_parallel && !parallel::IsSingleRank(mp_.tp);
  if (ctx.fp8 == nullptr || (gathered && !GathersFp8(ctx, mp_, *gate_up_))) return false;
  return ctx.fp8->PrepareFusedInput(*gate_up_, rows, hidden_, ctx.s(), target);
}

absl::Status SwiGluMlp::Forward(const StepContext& ctx, const Tensor& x, Saved* saved, Tensor* y,
                                bool accumulate, const Fp8Operand* x_quantized) const {
  {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(
        GatherProjectionInput(ctx, mp_, *gate_up_, x, x_quantized, &saved->x, &saved->x_scale_inv));
  }
  Fp8Operand gathered_fp8;
  if (saved->x_scale_inv.defined()) {
    x_quantized = InputOperand(saved->x, saved->x_scale_inv, &gathered_fp8);
  }
  const int64_t t = saved->x.dim(0);
  saved->gate_up = ctx.Act({t, 2 * local_ffn_});
  saved->act = ctx.Act({t, local_ffn_});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    MF_RETURN_IF_ERROR(
        LinearRows(ctx, *gate_up_, saved->x, GateUpMatrix(), 0, &saved->gate_up, x_quantized));
  }
  // Under an FP8 recipe that allows it, SwiGLU writes down_proj's input in FP8 as well (act stays:
  // the backward's wgrad reads it).
  Fp8ProducerTarget act_fp8;
  const bool fused =
      ctx.fp8 != nullptr && ctx.fp8->PrepareFusedInput(*down_, t, local_ffn_, ctx.s(), &act_fp8);
  {
    auto timed = ctx.Profile(OpFamily::kActivation);
    if (fused) {
      MF_RETURN_IF_ERROR(ops::SwiGluFp8(saved->gate_up, act_fp8.Quantize(), &saved->act, ctx.s()));
    } else {
      ops::SwiGluForward(saved->gate_up, &saved->act, ctx.s());
    }
  }
  auto down = [&](Tensor* out, float beta) {
    return fused ? LinearQuantized(ctx, *down_, act_fp8.operand, down_->compute, out, beta)
                 : Linear(ctx, *down_, saved->act, down_->compute, out, beta);
  };
  if (accumulate && parallel::IsSingleRank(mp_.tp)) {
    // y += act · W_downᵀ in the GEMM itself.
    auto timed = ctx.Profile(OpFamily::kGemm);
    return down(y, /*beta=*/1.0f);
  }
  Tensor partial = ctx.Act({t, hidden_});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    MF_RETURN_IF_ERROR(down(&partial, 0.0f));
  }
  return ReduceInto(ctx, partial, accumulate, y);
}

absl::Status SwiGluMlp::Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y,
                                 Tensor* d_x, bool accumulate) const {
  const int64_t t = saved.x.dim(0);
  Tensor d_y_full;
  Fp8Operand d_y_fp8;
  bool d_y_quantized = false;
  {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_ASSIGN_OR_RETURN(d_y_quantized,
                        GatherProjectionGrad(ctx, mp_, *down_, d_y, &d_y_full, &d_y_fp8));
  }
  Tensor d_act = ctx.Act({t, local_ffn_});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    MF_RETURN_IF_ERROR(LinearGrad(ctx, *down_, saved.act, down_->compute, d_y_full, &d_act,
                                  &down_->grad, 0.0f, d_y_quantized ? &d_y_fp8 : nullptr));
  }
  Tensor d_gate_up = ctx.Act({t, 2 * local_ffn_});
  // Under an FP8 recipe that allows it, SwiGLU's backward writes d_gate_up in FP8 as well (with
  // its transposed codes per tensor); d_gate_up itself stays for the blockwise wgrad's token tiles.
  Fp8ProducerTarget grad_fp8;
  const bool fused = ctx.fp8 != nullptr &&
                     ctx.fp8->PrepareFusedGrad(*gate_up_, t, 2 * local_ffn_, ctx.s(), &grad_fp8);
  {
    auto timed = ctx.Profile(OpFamily::kActivation);
    if (fused) {
      MF_RETURN_IF_ERROR(
          ops::SwiGluBackwardFp8(saved.gate_up, d_act, grad_fp8.Quantize(), &d_gate_up, ctx.s()));
    } else {
      ops::SwiGluBackward(saved.gate_up, d_act, &d_gate_up, ctx.s());
    }
  }
  const Fp8Operand* d_gate_up_fp8 = fused ? &grad_fp8.operand : nullptr;
  Fp8Operand x_storage;
  const Fp8Operand* x_fp8 = InputOperand(saved.x, saved.x_scale_inv, &x_storage);
  // One GEMM for the input gradient of both projections, one for their weight gradient.
  Tensor d_w = gate_up_->grad.Reshape({2 * local_ffn_, hidden_});
  if (accumulate && parallel::IsSingleRank(mp_.tp)) {
    // d_x += d_gate_up · W_gate_up in the GEMM itself.
    auto timed = ctx.Profile(OpFamily::kGemm);
    return LinearGrad(ctx, *gate_up_, saved.x, GateUpMatrix(), d_gate_up, d_x, &d_w,
                      /*dx_beta=*/1.0f, d_gate_up_fp8, x_fp8);
  }
  Tensor d_full = ctx.Act({t, hidden_});
  {
    auto timed = ctx.Profile(OpFamily::kGemm);
    MF_RETURN_IF_ERROR(LinearGrad(ctx, *gate_up_, saved.x, GateUpMatrix(), d_gate_up, &d_full,
                                  &d_w, 0.0f, d_gate_up_fp8, x_fp8));
  }
  return ReduceInto(ctx, d_full, accumulate, d_x);
}

void SwiGluMlp::Saved::AppendRefs(std::vector<SavedRef>* refs) {
  refs->push_back({SavedKind::kNormOutput, &x});
  refs->push_back({SavedKind::kSwiGluInput, &gate_up});
  refs->push_back({SavedKind::kSwiGluOutput, &act});
}

absl::Status SwiGluMlp::Recompute(const StepContext& ctx, const Tensor& x, Saved* saved) const {
  if (!IsComplete(ctx, saved->x)) {  // a TP gather (a collective): every row
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(
        GatherProjectionInput(ctx, mp_, *gate_up_, x, nullptr, &saved->x, &saved->x_scale_inv));
  }
  const int64_t t = saved->x.dim(0);
  // Both steps are row-separable: only the rows a partial swap did not bring back are recomputed
  // (the GEMM where its row slice is exact, core/model/recompute_rows.h).
  int64_t first = GemmBlockStart(RecomputeFrom(ctx, {&saved->gate_up}, SplitsGemmRows(ctx)), t);
  if (first < t) {
    Tensor rows = RecomputeRowsOf(ctx, &saved->gate_up, {t, 2 * local_ffn_}, ctx.act_dtype, first);
    auto timed = ctx.Profile(OpFamily::kGemm);
    Fp8Operand x_fp8;
    MF_RETURN_IF_ERROR(LinearRows(ctx, *gate_up_, saved->x, GateUpMatrix(), first, &rows,
                                  InputOperand(saved->x, saved->x_scale_inv, &x_fp8)));
  }
  first = RecomputeFrom(ctx, {&saved->act}, /*split=*/true);
  if (first < t) {
    Tensor rows = RecomputeRowsOf(ctx, &saved->act, {t, local_ffn_}, ctx.act_dtype, first);
    auto timed = ctx.Profile(OpFamily::kActivation);
    ops::SwiGluForward(saved->gate_up.Slice(first, t), &rows, ctx.s());
  }
  return absl::OkStatus();
}

absl::Status SwiGluMlp::ReduceInto(const StepContext& ctx, const Tensor& partial, bool accumulate,
                                   Tensor* out) const {
  auto timed = ctx.Profile(OpFamily::kCommunication);
  if (!accumulate) return parallel::TpReduce(partial, mp_.tp, mp_.sequence_parallel, out);
  Tensor reduced;
  MF_RETURN_IF_ERROR(parallel::TpReduce(partial, mp_.tp, mp_.sequence_parallel, &reduced));
  ops::Add(*out, reduced, out, ctx.s());
  return absl::OkStatus();
}

}  // namespace moefold::model
