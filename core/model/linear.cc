// The projections' GEMMs: the bf16/f32 ops, or the step's FP8 recipe (core/model/fp8_linear.h).
#include "core/model/linear.h"

#include <algorithm>
#include <vector>

#include "core/model/fp8_linear.h"
#include "core/model/recompute_rows.h"
#include "ops/gemm.h"
#include "ops/grouped_gemm.h"

namespace moefold::model {
namespace {

std::vector<int64_t> HostCounts(const Tensor& counts) {
  MF_CHECK(counts.dtype() == DType::kI32)
      << "FP8 grouped GEMM: counts must be i32, got " << counts.DebugString();
  std::vector<int64_t> out(static_cast<size_t>(counts.numel()));
  if (!counts.device().is_cpu()) {  // a wait, as ops::GroupedLinearForward's copy back
    const std::vector<float> values = counts.ToVector();
    for (size_t e = 0; e < out.size(); ++e) out[e] = static_cast<int64_t>(values[e]);
    return out;
  }
  for (size_t e = 0; e < out.size(); ++e) out[e] = counts.data<int32_t>()[e];
  return out;
}

// A dense projection as a grouped one of a single expert holding every row.
Tensor AsOneExpert(const Tensor& w) { return w.Reshape({1, w.dim(0), w.dim(1)}); }

}  // namespace

absl::Status Linear(const StepContext& ctx, const Parameter& param, const Tensor& x,
                    const Tensor& w, Tensor* y, float beta) {
  if (ctx.fp8 == nullptr) {
    ops::Gemm(x, /*trans_a=*/false, w, /*trans_b=*/true, 1.0f, beta, y, ctx.s());
    return absl::OkStatus();
  }
  return ctx.fp8->Forward(ctx, param, 0, x, AsOneExpert(w), {x.dim(0)}, y, beta);
}

int64_t GemmRowBlock(int64_t rows) { return std::max<int64_t>(8, ((rows + 7) / 8 + 7) / 8 * 8); }

namespace {

// Rows [b, e) of a forward operand (its transposed codes are the weight gradient's, not needed).
Fp8Operand OperandRows(const Fp8Operand& x, int64_t b, int64_t e) {
  Fp8Operand rows;
  rows.codes = x.codes.Slice(b, e);
  rows.scale_inv = x.blockwise ? x.scale_inv.Slice(b, e) : x.scale_inv;
  rows.blockwise = x.blockwise;
  return rows;
}

}  // namespace

absl::Status LinearRows(const StepContext& ctx, const Parameter& param, const Tensor& x,
                        const Tensor& w, int64_t first, Tensor* y, const Fp8Operand* x_fp8) {
  const int64_t m = x.dim(0);
  MF_CHECK_EQ(y->dim(0), m - first) << "LinearRows: rows [" << first << ", " << m << ")";
  if (!SplitsGemmRows(ctx)) {
    MF_CHECK_EQ(first, 0) << "LinearRows: no row ranges where the GEMM's split is not exact";
    return x_fp8 != nullptr ? LinearQuantized(ctx, param, *x_fp8, w, y)
                            : Linear(ctx, param, x, w, y);
  }
  const int64_t block = GemmRowBlock(m);
  MF_CHECK_EQ(first % block, 0) << "LinearRows: row " << first << " is inside a block of " << block;
  for (int64_t b = first; b < m; b += block) {
    const int64_t e = std::min(m, b + block);
    Tensor rows = y->Slice(b - first, e - first);
    MF_RETURN_IF_ERROR(x_fp8 != nullptr
                           ? LinearQuantized(ctx, param, OperandRows(*x_fp8, b, e), w, &rows)
                           : Linear(ctx, param, x.Slice(b, e), w, &rows));
  }
  return absl::OkStatus();
}

absl::Status LinearQuantized(const StepContext& ctx, const Parameter& param, const Fp8Operand& x,
                             const Tensor& w, Tensor* y, float beta) {
  MF_CHECK(ctx.fp8 != nullptr) << param.name << ": an FP8 operand without an FP8 recipe";
  return ctx.fp8->Forward(ctx, param, 0, x, AsOneExpert(w), {x.codes.dim(0)}, y, beta);
}

absl::Status LinearGrad(const StepContext& ctx, const Parameter& param, const Tensor& x,
                        const Tensor& w, const Tensor& d_y, Tensor* d_x, Tensor* d_w,
                        float dx_beta, const Fp8Operand* d_y_quantized,
                        const Fp8Operand* x_quantized) {
  if (ctx.fp8 == nullptr) {
    MF_CHECK(d_y_quantized == nullptr && x_quantized == nullptr)
        << param.name << ": an FP8 operand without an FP8 recipe";
    if (d_x != nullptr) ops::Gemm(d_y, false, w, false, 1.0f, dx_beta, d_x, ctx.s());
    if (d_w != nullptr) ops::Gemm(d_y, true, x, false, 1.0f, 1.0f, d_w, ctx.s());
    return absl::OkStatus();
  }
  Tensor d_w3;
  if (d_w != nullptr) d_w3 = AsOneExpert(*d_w);
  return ctx.fp8->Backward(ctx, param, 0, x, AsOneExpert(w), {x.dim(0)}, d_y, d_x, dx_beta,
                           d_w != nullptr ? &d_w3 : nullptr, d_y_quantized, x_quantized);
}

absl::Status GroupedLinear(const StepContext& ctx, const Parameter& param, int64_t first_expert,
                           const Tensor& x, const Tensor& w, const Tensor& counts, Tensor* y) {
  if (ctx.fp8 == nullptr) {
    ops::GroupedLinearForward(x, w, counts, y, ctx.s());
    return absl::OkStatus();
  }
  return ctx.fp8->Forward(ctx, param, first_expert, x, w, HostCounts(counts), y, 0.0f);
}

absl::Status GroupedLinearGrad(const StepContext& ctx, const Parameter& param,
                               int64_t first_expert, const Tensor& x, const Tensor& w,
                               const Tensor& counts, const Tensor& d_y, Tensor* d_x, Tensor* d_w) {
  if (ctx.fp8 == nullptr) {
    ops::GroupedLinearBackward(x, w, counts, d_y, d_x, d_w, ctx.s());
    return absl::OkStatus();
  }
  return ctx.fp8->Backward(ctx, param, first_expert, x, w, HostCounts(counts), d_y, d_x, 0.0f,
                           d_w);
}

}  // namespace moefold::model
