// The linear projections' GEMMs in the run's precision: the layers call these instead of
// ops::LinearForward / LinearBackward / GroupedLinear*, and they run the bf16 (or f32) GEMMs, or,
// when the step has an FP8 recipe (StepContext::fp8), quantise both operands and multiply in FP8
// (core/model/fp8_linear.h). The weight's Parameter names the GEMM site whose scales are used.
//
//   MF_RETURN_IF_ERROR(Linear(ctx, *wqkv_, x, QkvMatrix(), &qkv));            // y = x·Wᵀ
//   MF_RETURN_IF_ERROR(LinearGrad(ctx, *wqkv_, x, QkvMatrix(), d_y, &d_x, &d_w));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "core/model/fp8_operand.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

// y = x·Wᵀ (+ y when beta = 1). x (T, in), w (out, in) a view of `param`'s compute tensor, y
// (T, out) in the activation dtype.
absl::Status Linear(const StepContext& ctx, const Parameter& param, const Tensor& x,
                    const Tensor& w, Tensor* y, float beta = 0.0f);

// The projections whose output a recompute may produce by row ranges (core/model/recompute_rows.h:
// q/k/v, gate_up, the attention output): rows [first, M) of y = x·Wᵀ, where x is the whole input
// (M rows) and y holds M − first rows. Where the split is on (SplitsGemmRows) the GEMM runs over
// fixed blocks of GemmRowBlock(M) rows counted from row 0 — the forward (first = 0) and a
// recompute (first a multiple of the block) make the same calls on the same rows, so the rows
// get the same bits whatever BLAS does with a different M. Elsewhere one GEMM (first = 0).
// `x_fp8`: x's codes from a fused producer (FP8 only); each block then multiplies its rows of the
// codes, so a fused forward splits its GEMM exactly as an unfused recompute does.
absl::Status LinearRows(const StepContext& ctx, const Parameter& param, const Tensor& x,
                        const Tensor& w, int64_t first, Tensor* y,
                        const Fp8Operand* x_fp8 = nullptr);
// The row block of LinearRows over M rows: M/8 rounded up to a multiple of 8 (at most 8 GEMMs).
int64_t GemmRowBlock(int64_t rows);
// y = x·Wᵀ with x already in FP8, made by a fused producer (core/model/fp8_operand.h; needs
// ctx.fp8).
absl::Status LinearQuantized(const StepContext& ctx, const Parameter& param, const Fp8Operand& x,
                             const Tensor& w, Tensor* y, float beta = 0.0f);

// d_x = d_y·W (+ d_x when dx_beta = 1) when d_x is non-null; d_w += d_yᵀ·x when d_w is non-null
// (f32). FP8 only: `d_y_quantized`, d_y's codes from a fused producer or an FP8 gather (d_y may
// then be undefined where the operand has every code the GEMMs read); `x_quantized`, x's codes
// from an FP8 gather (x is then those codes; core/model/fp8_gather.h).
absl::Status LinearGrad(const StepContext& ctx, const Parameter& param, const Tensor& x,
                        const Tensor& w, const Tensor& d_y, Tensor* d_x, Tensor* d_w,
                        float dx_beta = 0.0f, const Fp8Operand* d_y_quantized = nullptr,
                        const Fp8Operand* x_quantized = nullptr);

// The experts' grouped GEMMs (ops/grouped_gemm.h): w (E_c, out, in) holds the local experts
// [first_expert, first_expert + E_c) of the stacked expert `param`; counts (E_c) i32 on the host.
absl::Status GroupedLinear(const StepContext& ctx, const Parameter& param, int64_t first_expert,
                           const Tensor& x, const Tensor& w, const Tensor& counts, Tensor* y);
absl::Status GroupedLinearGrad(const StepContext& ctx, const Parameter& param,
                               int64_t first_expert, const Tensor& x, const Tensor& w,
                               const Tensor& counts, const Tensor& d_y, Tensor* d_x, Tensor* d_w);

}  // namespace moefold::model
