// FP8 token dispatch (docs/FORMULAS.md §18.4): under an FP8 recipe, where the experts span ranks,
// the MoE layer casts its routed rows to E4M3 while it permutes them (ops::PermuteQuantize), the
// dispatcher's all-to-all and ETP all-gather move the 1-byte codes and their scales, and the
// experts' gate/up GEMM multiplies the received codes as they are. The scales are chosen so that
// a row is cast the same whatever the layout ("layout-invariant expert-row scales"):
//   blockwise: 1×128 tiles along H, the scales travel with their row;
//   delayed:   the site's delayed scale, the same on every rank — no scales travel;
//   current:   the micro-batch's routed-input amax (max over TP×CP), one f32 per row travels.
// The backward sends the down projection's output gradient to the experts the same way (the
// combine's backward is a dispatch): cast to the gradient format at home with the down site's
// gradient scale (delayed), the micro-batch's gradient amax (current, per row) or 1×128 tiles.
//
//   MF_ASSIGN_OR_RETURN(parallel::DispatchRows rows,
//                       QuantizeRoutedRows(ctx, gate_up, routed, sorted, top_k));
//   ... DispatchAndCombine(plan, groups, rows, routed.dtype(), experts, &grouped, ...) ...
//   MF_RETURN_IF_ERROR(GroupedLinearFp8(ctx, gate_up, lo, {codes, scales}, w, counts, &y));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/step_context.h"
#include "core/parameter.h"
#include "parallel/token_dispatcher.h"

namespace moefold::model {

// Received FP8 rows: codes (N, H) kFp8E4M3 and scale_inv (N, 1) per row (current), (N, H/128)
// per tile (blockwise), undefined (delayed: the site's scale).
struct Fp8Rows {
  Tensor codes;
  Tensor scale_inv;
};

// Whether the step dispatches FP8 rows (an FP8 recipe with Fp8Options::dispatch).
bool UsesFp8Dispatch(const StepContext& ctx);

// routed (T_r, H) activation dtype, sorted (N) i32 the kept pairs (ops/moe.h) -> the permuted rows
// as codes (N, H) kFp8E4M3 with their scales (undefined under delayed), for the expert site
// `gate_up` (its input scale; delayed records the rows' amax in its slot). Current: a max-reduce
// over TP×CP (every rank of it calls this). InvalidArgument (blockwise) when H % 128 != 0.
absl::StatusOr<parallel::DispatchRows> QuantizeRoutedRows(const StepContext& ctx,
                                                          const Parameter& gate_up,
                                                          const Tensor& routed,
                                                          const Tensor& sorted, int top_k);

// The combine's backward: d_rows (N, H) the output gradients of the kept pairs in expert order
// (ops::UnpermuteTokensBackward's) -> their codes (N, H) in the gradient format with their scales
// (as QuantizeRoutedRows, for the expert site `down`'s gradient; delayed records the rows' amax
// in its gradient slot; current max-reduces over TP×CP, every rank of it calls this).
// InvalidArgument (blockwise) when H % 128 != 0.
absl::StatusOr<parallel::DispatchRows> QuantizeCombineGradient(const StepContext& ctx,
                                                               const Parameter& down,
                                                               const Tensor& d_rows);

// GroupedLinear / GroupedLinearGrad (core/model/linear.h) with the input rows already FP8.
absl::Status GroupedLinearFp8(const StepContext& ctx, const Parameter& param,
                              int64_t first_expert, const Fp8Rows& x, const Tensor& w,
                              const Tensor& counts, Tensor* y);
absl::Status GroupedLinearGradFp8(const StepContext& ctx, const Parameter& param,
                                  int64_t first_expert, const Fp8Rows& x, const Tensor& w,
                                  const Tensor& counts, const Tensor& d_y, Tensor* d_x,
                                  Tensor* d_w);
// GroupedLinearGrad with the output gradient received as FP8 codes (QuantizeCombineGradient's,
// after the exchange): x the saved input rows in the activation dtype.
absl::Status GroupedLinearGradFromFp8(const StepContext& ctx, const Parameter& param,
                                      int64_t first_expert, const Tensor& x, const Tensor& w,
                                      const Tensor& counts, const Fp8Rows& d_y, Tensor* d_x,
                                      Tensor* d_w);

}  // namespace moefold::model
