// FP8 token dispatch: the routed rows' quantisation (ops::PermuteQuantize with the recipe's
// scale) and the expert GEMMs on received codes (Fp8Training::ForwardCodes / BackwardCodes).
#include "core/model/fp8_dispatch.h"

#include <vector>

#include "core/model/fp8_linear.h"
#include "ops/fp8.h"
#include "ops/permute_quantize.h"

namespace moefold::model {
namespace {

std::vector<int64_t> HostCounts(const Tensor& counts) {
  MF_CHECK(counts.dtype() == DType::kI32 && counts.device().is_cpu())
      << "FP8 dispatch: counts must be i32 on the host, got " << counts.DebugString();
  std::vector<int64_t> out(static_cast<size_t>(counts.numel()));
  for (size_t e = 0; e < out.size(); ++e) out[e] = counts.data<int32_t>()[e];
  return out;
}

}  // namespace

bool UsesFp8Dispatch(const StepContext& ctx) {
  return ctx.fp8 != nullptr && ctx.fp8->options().dispatch;
}

absl::StatusOr<parallel::DispatchRows> QuantizeRoutedRows(const StepContext& ctx,
                                                          const Parameter& gate_up,
                                                          const Tensor& routed,
                                                          const Tensor& sorted, int top_k) {
  MF_CHECK(UsesFp8Dispatch(ctx)) << "QuantizeRoutedRows without an FP8 dispatch";
  Stream& stream = ctx.s();
  const Fp8Options& options = ctx.fp8->options();
  const int64_t n = sorted.numel(), h = routed.dim(1);
  parallel::DispatchRows rows;
  rows.rows = Tensor::Empty({n, h}, DType::kFp8E4M3, routed.device());
  rows.rows.RecordStream(stream);
  if (options.recipe == Fp8Recipe::kBlockwise) {
    rows.scales = Tensor::Empty({n, h / ops::kFp8ActivationTile.cols}, DType::kF32,
                                routed.device());
    rows.scales.RecordStream(stream);
    MF_RETURN_IF_ERROR(ops::PermuteQuantize(routed, sorted, top_k, Tensor(), Tensor(),
                                            {.tiles = true, .pow2 = options.pow2_scales},
                                            &rows.rows, &rows.scales, nullptr, stream));
    return rows;
  }
  MF_ASSIGN_OR_RETURN(Fp8Training::DispatchScale scale,
                      ctx.fp8->DispatchScaleOf(gate_up, routed, stream));
  Tensor amax = scale.amax;
  if (options.recipe == Fp8Recipe::kCurrent) {
    rows.scales = Tensor::Empty({n, 1}, DType::kF32, routed.device());
    rows.scales.RecordStream(stream);
  }
  MF_RETURN_IF_ERROR(ops::PermuteQuantize(
      routed, sorted, top_k, scale.scale, scale.scale_inv, {}, &rows.rows,
      rows.scales.defined() ? &rows.scales : nullptr, amax.defined() ? &amax : nullptr, stream));
  return rows;
}

absl::StatusOr<parallel::DispatchRows> QuantizeCombineGradient(const StepContext& ctx,
                                                               const Parameter& down,
                                                               const Tensor& d_rows) {
  MF_CHECK(UsesFp8Dispatch(ctx)) << "QuantizeCombineGradient without an FP8 dispatch";
  Stream& stream = ctx.s();
  const Fp8Options& options = ctx.fp8->options();
  const int64_t n = d_rows.dim(0), h = d_rows.dim(1);
  // The rows are already in expert order: PermuteQuantize with the identity (row r is "token"
  // r of top-1) is the cast with per-row scales, bit for bit the recipe's cast of each row.
  Tensor identity = Tensor::Empty({n}, DType::kI32);
  for (int64_t r = 0; r < n; ++r) identity.data<int32_t>()[r] = static_cast<int32_t>(r);
  identity = ctx.Upload(identity);
  parallel::DispatchRows rows;
  rows.rows = Tensor::Empty({n, h}, options.grad_format, d_rows.device());
  rows.rows.RecordStream(stream);
  if (options.recipe == Fp8Recipe::kBlockwise) {
    rows.scales = Tensor::Empty({n, h / ops::kFp8ActivationTile.cols}, DType::kF32,
                                d_rows.device());
    rows.scales.RecordStream(stream);
    MF_RETURN_IF_ERROR(ops::PermuteQuantize(d_rows, identity, 1, Tensor(), Tensor(),
                                            {.tiles = true, .pow2 = options.pow2_scales},
                                            &rows.rows, &rows.scales, nullptr, stream));
    return rows;
  }
  MF_ASSIGN_OR_RETURN(Fp8Training::DispatchScale scale,
                      ctx.fp8->GradDispatchScaleOf(down, d_rows, stream));
  Tensor amax = scale.amax;
  if (options.recipe == Fp8Recipe::kCurrent) {
    rows.scales = Tensor::Empty({n, 1}, DType::kF32, d_rows.device());
    rows.scales.RecordStream(stream);
  }
  MF_RETURN_IF_ERROR(ops::PermuteQuantize(
      d_rows, identity, 1, scale.scale, scale.scale_inv, {}, &rows.rows,
      rows.scales.defined() ? &rows.scales : nullptr, amax.defined() ? &amax : nullptr, stream));
  return rows;
}

absl::Status GroupedLinearFp8(const StepContext& ctx, const Parameter& param,
                              int64_t first_expert, const Fp8Rows& x, const Tensor& w,
                              const Tensor& counts, Tensor* y) {
  return ctx.fp8->ForwardCodes(ctx, param, first_expert, x.codes, x.scale_inv, w,
                               HostCounts(counts), y, 0.0f);
}

absl::Status GroupedLinearGradFp8(const StepContext& ctx, const Parameter& param,
                                  int64_t first_expert, const Fp8Rows& x, const Tensor& w,
                                  const Tensor& counts, const Tensor& d_y, Tensor* d_x,
                                  Tensor* d_w) {
  return ctx.fp8->BackwardCodes(ctx, param, first_expert, x.codes, x.scale_inv, w,
                                HostCounts(counts), d_y, d_x, 0.0f, d_w);
}

absl::Status GroupedLinearGradFromFp8(const StepContext& ctx, const Parameter& param,
                                      int64_t first_expert, const Tensor& x, const Tensor& w,
                                      const Tensor& counts, const Fp8Rows& d_y, Tensor* d_x,
                                      Tensor* d_w) {
  return ctx.fp8->BackwardGradCodes(ctx, param, first_expert, x, w, HostCounts(counts), d_y.codes,
                                    d_y.scale_inv, d_x, 0.0f, d_w);
}

}  // namespace moefold::model
