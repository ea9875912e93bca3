// FP8 quantisation ops: per-tensor cast + transpose + amax in one pass (the delayed and current
// recipes), blockwise quantisation in 1×128 activation tiles or 128×128 weight blocks, and the
// fused per-step scale update of a group of tensors. Invariant: the CPU reference and the CUDA
// kernels round the same f32 operations the same way (x·scale rounded once, then the saturating
// RNE cast of core/dtype.h), so codes, scales and amaxes are the same bits on both devices.
//
// An amax is max|x| with NaN ordered above +Inf: one NaN makes it the quiet NaN 0x7FC00000, so
// the recipe sees it whatever the order of the reduction.
//
//   ops::CastTransposeAmax(x, scale, &y, &y_t, &amax, stream);     // (M, N) → (M, N), (N, M) fp8
//   MF_RETURN_IF_ERROR(ops::QuantizeBlockwise(w, ops::kFp8WeightBlock, {}, &q, &s, stream));
//   ops::Fp8UpdateScales(kFp8E4M3Max, &amax, &history, &scale, &scale_inv, stream);
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// The largest finite value of an FP8 dtype (kFp8E4M3: 448, kFp8E5M2: 57344); MF_CHECK otherwise.
float Fp8Max(DType fp8_dtype);

// The scale that maps `amax` onto `fp8_max`: scale = fp8_max / amax (f32, rounded once), FLT_MAX
// where that overflows (amax subnormal). Returns `previous` where amax is zero or not finite. With
// `pow2` the scale is rounded down to a power of two (its exponent kept, mantissa cleared), so
// multiplying by it and by its inverse is exact.
float Fp8ScaleFromAmax(float amax, float fp8_max, bool pow2, float previous);

// One pass over x:
//   y[i, j] = fp8(x[i, j]·scale)   (x widened to f32, the product rounded to f32, then RNE with
//                                   saturation: |v| > max → ±max, ±Inf → ±max, NaN → NaN);
//   y_t[j, i] = y[i, j]            (the K-major copy Hopper's FP8 GEMMs need for dgrad/wgrad);
//   amax = max(amax, max|x|)       (accumulates: the recipe zeroes it once per step).
// x (M, N) f32 or bf16; scale (1) f32; y (M, N) and y_t (N, M) kFp8E4M3 or kFp8E5M2 (one dtype,
// which picks the format); amax (1) f32. Any of y, y_t, amax may be null (not computed). All on
// x's device. A rank other than 2: flatten the leading dimensions first.
void CastTransposeAmax(const Tensor& x, const Tensor& scale, Tensor* y, Tensor* y_t, Tensor* amax,
                       Stream& stream);

// The quantisation block: `rows` × `cols` elements of a row-major (M, N) tensor.
struct Fp8BlockShape {
  int64_t rows = 1;
  int64_t cols = 128;
};
inline constexpr Fp8BlockShape kFp8ActivationTile{1, 128};  // along the row (the GEMM's K)
inline constexpr Fp8BlockShape kFp8WeightBlock{128, 128};

struct BlockwiseOptions {
  bool pow2 = false;  // scales rounded down to powers of two (Fp8ScaleFromAmax)
};

// Per block b of x: s = Fp8ScaleFromAmax(max|x_b|, fp8_max, pow2, 1), q_b = fp8(x_b·s) as in
// CastTransposeAmax, scale_inv[b] = 1/s (f32, rounded once). A block that is all zero or holds a
// NaN/Inf keeps s = 1: zeros stay 0, NaN stays NaN, ±Inf saturates to ±max.
// x (M, N) f32 or bf16; q (M, N) kFp8E4M3 or kFp8E5M2; scale_inv (M/rows, N/cols) f32; on x's
// device. InvalidArgument (naming the dimension) when M or N is not a multiple of the block.
absl::Status QuantizeBlockwise(const Tensor& x, const Fp8BlockShape& block,
                               const BlockwiseOptions& options, Tensor* q, Tensor* scale_inv,
                               Stream& stream);

// The inverse: x[i, j] = q[i, j]·scale_inv[i/rows, j/cols] (f32 product, rounded once to x's
// dtype). q (M, N) fp8; scale_inv (M/rows, N/cols) f32; x (M, N) f32 or bf16; on q's device.
// InvalidArgument as QuantizeBlockwise.
absl::Status DequantizeBlockwise(const Tensor& q, const Tensor& scale_inv,
                                 const Fp8BlockShape& block, Tensor* x, Stream& stream);

// The delayed-scaling step of a group of T tensors (one kernel on the GPU):
//   history[l] = history[l−1] for l = L−1, …, 1;  history[0] = amax;  amax = 0;
//   scale[t] = Fp8ScaleFromAmax(max_l history[l, t], fp8_max, false, scale[t]);
//   scale_inv[t] = 1 / scale[t].
// A NaN amax stays in the history for L steps and keeps the scale for as long. With `history`
// null the step's amax is used as is and not zeroed (current scaling). amax (T) f32; history
// (L, T) f32, L ≥ 1; scale and scale_inv (T) f32, updated in place; all on one device.
void Fp8UpdateScales(float fp8_max, Tensor* amax, Tensor* history, Tensor* scale, Tensor* scale_inv,
                     Stream& stream);

}  // namespace moefold::ops
