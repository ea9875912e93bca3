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

namespace {

// Rows towards the experts of `param` as FP8 codes with the recipe's scales: row r of the result
// is x's row sorted[r] / k (ops::PermuteQuantize), its input rows in E4M3 or, with `gradient`,
// its output-gradient rows in the gradient format.
absl::StatusOr<parallel::DispatchRows> QuantizeTravellingRows(const StepContext& ctx,
                                                              const Parameter& param,
                                                              const Tensor& x,
                                                              const Tensor& sorted, int k,
                                                              bool gradient) {
  Stream& stream = ctx.s();
  const Fp8Options& options = ctx.fp8->options();
  const int64_t n = sorted.numel(), h = x.dim(1);
  parallel::DispatchRows rows;
  rows.rows =
      Tensor::Empty({n, h}, gradient ? options.grad_format : DType::kFp8E4M3, x.device());
  rows.rows.RecordStream(stream);
  if (options.recipe == Fp8Recipe::kBlockwise) {
    rows.scales = Tensor::Empty({n, h / ops::kFp8ActivationTile.cols}, DType::kF32, x.device());
    rows.scales.RecordStream(stream);
    MF_RETURN_IF_ERROR(ops::PermuteQuantize(x, sorted, k, Tensor(), Tensor(),
                                            {.tiles = true, .pow2 = options.pow2_scales},
                                            &rows.rows, &rows.scales, nullptr, stream));
    return rows;
  }
  MF_ASSIGN_OR_RETURN(Fp8Training::DispatchScale scale,
                      ctx.fp8->DispatchScaleOf(param, x, gradient, stream));
  Tensor amax = scale.amax;
  if (options.recipe == Fp8Recipe::kCurrent) {
    rows.scales = Tensor::Empty({n, 1}, DType::kF32, x.device());
    rows.scales.RecordStream(stream);
  }
  MF_RETURN_IF_ERROR(ops::PermuteQuantize(
      x, sorted, k, scale.scale, scale.scale_inv, {}, &rows.rows,
      rows.scales.defined() ? &rows.scales : nullptr, amax.defined() ? &amax : nullptr, stream));
  return rows;
}

}  // namespace

absl::StatusOr<parallel::DispatchRows> QuantizeRoutedRows(const StepContext& ctx,
                                                          const Parameter& gate_up,
                                                          const Tensor& routed,
                                                          const Tensor& sorted, int top_k) {
  MF_CHECK(UsesFp8Dispatch(ctx)) << "QuantizeRoutedRows without an FP8 dispatch";
  return QuantizeTravellingRows(ctx, gate_up, routed, sorted, top_k, /*gradient=*/false);
}

absl::StatusOr<parallel::DispatchRows> QuantizeCombineGradient(const StepContext& ctx,
                                                               const Parameter& down,
                                                               const Tensor& d_rows) {
  MF_CHECK(UsesFp8Dispatch(ctx)) << "QuantizeCombineGradient without an FP8 dispatch";
  // The rows are already in expert order: PermuteQuantize with the identity (row r is "token"
  // r of top-1) is the cast with per-row scales, bit for bit the recipe's cast of each row.
  const int64_t n = d_rows.dim(0);
  Tensor identity = Tensor::Empty({n}, DType::kI32);
  for (int64_t r = 0; r < n; ++r) identity.data<int32_t>()[r] = static_cast<int32_t>(r);
  return QuantizeTravellingRows(ctx, down, d_rows, ctx.Upload(identity), 1, /*gradient=*/true);
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
