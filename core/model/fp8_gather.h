// FP8 all-gathers under sequence parallelism (docs/FORMULAS.md §18.5). With SP and TP > 1 the
// column-parallel projections (qkv, a dense FFN's gate_up) all-gather their input over TP, and the
// row-parallel ones (o_proj, down) their output gradient. Under a per-tensor FP8 recipe the GEMM
// only ever reads those tensors as FP8 codes with one scale, and the scale of the whole is known
// from each rank's rows (delayed: the site's scale; current: the rows' amax max-reduced over
// TP×CP). So each rank quantises its own rows and the gather moves 1-byte codes — half of bf16 —
// and the GEMMs get the very codes they would have made from the gathered bf16 tensor. The
// forward input's codes are also what the layer saves for its weight gradient (half the bytes of
// the bf16 input, and xᵀ's codes are those codes transposed).
//
//   Tensor full, scale_inv;  // scale_inv defined iff `full` holds FP8 codes
//   MF_RETURN_IF_ERROR(GatherProjectionInput(ctx, mp_, *wqkv_, x_norm, nullptr, &full, &scale_inv));
//   MF_RETURN_IF_ERROR(LinearRows(ctx, *wqkv_, full, w, 0, &qkv, InputOperand(full, scale_inv, &op)));
#pragma once

#include "absl/status/status.h"
#include "core/model/fp8_operand.h"
#include "core/model/model_parallel.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

// Whether `param`'s sequence-parallel gather moves FP8 codes in this step: SP with TP > 1, an FP8
// recipe, and Fp8Training::GathersFp8 (the option on, a per-tensor recipe, a dense site).
bool GathersFp8(const StepContext& ctx, const ModelParallel& mp, const Parameter& param);

// The TP gather of the column-parallel `param`'s input rows `x` (T/tp, K) under SP (identity
// without): *full (T, K) and, where GathersFp8, *full holds E4M3 codes and *scale_inv (1) their
// scale's inverse; else *full is in x's dtype and *scale_inv undefined. `x_fp8`: x already
// quantised by a fused producer (Fp8Training::PrepareFusedInput for this rank's rows), used
// where the gather is FP8. Status: a failed collective.
absl::Status GatherProjectionInput(const StepContext& ctx, const ModelParallel& mp,
                                   const Parameter& param, const Tensor& x,
                                   const Fp8Operand* x_fp8, Tensor* full, Tensor* scale_inv);

// The operand LinearRows/LinearGrad take for an input GatherProjectionInput made: null where
// `full` is not FP8 codes (scale_inv undefined), else *storage set and returned.
const Fp8Operand* InputOperand(const Tensor& full, const Tensor& scale_inv, Fp8Operand* storage);

// The TP gather of the row-parallel `param`'s output gradient d_y (T/tp, N) under SP (identity
// without): where GathersFp8, *d_y_fp8 gets the gathered codes (T, N) in the gradient format,
// their transpose padded for the weight gradient and the scale's inverse, *d_y_full stays
// undefined and true is returned; else *d_y_full is the gathered d_y and false is returned.
absl::StatusOr<bool> GatherProjectionGrad(const StepContext& ctx, const ModelParallel& mp,
                                          const Parameter& param, const Tensor& d_y,
                                          Tensor* d_y_full, Fp8Operand* d_y_fp8);

}  // namespace moefold::model
