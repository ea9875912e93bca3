// Fused FP8 producers (docs/FORMULAS.md §18.3): an op that makes a GEMM's input and hands it over
// already quantised, so the separate pass that re-reads the bf16 tensor to take its amax and cast
// it disappears. Each output element is first computed and rounded to the activation dtype
// exactly as the unfused op (ops/norm.h, ops/activation.h) rounds it, and that rounded value is
// then quantised exactly as ops/fp8.h quantises it, so
//   RmsNormFp8(x)            == RmsNormForward(x)      then CastTransposeAmax / QuantizeBlockwise,
//   AddRmsNormFp8(x, r)      == AddRmsNormForward(x, r) then ...,
//   SwiGluFp8(gate_up)       == SwiGluForward(gate_up) then ...,
//   SwiGluBackwardFp8(...)   == SwiGluBackward(...)    then ...,
// bit for bit (codes, transposed codes, scale inverses, amaxes) on each device. On the GPU the
// fused kernels share the unfused kernels' arithmetic (the row sum of squares, the SwiGLU element
// functions); on the CPU the reference is the unfused op followed by the row quantiser.
//
// Two quantisations, picked by Fp8Quantize::scale:
//   per tensor (scale given — the delayed recipe, whose scale is known before the op):
//     codes = fp8(v·scale), optionally codes_t = its transpose, amax = max(amax, max|v|);
//   1×128 tiles along the row (scale null — the blockwise recipe): per tile
//     s = Fp8ScaleFromAmax(max|v_tile|, fp8_max, pow2, 1), codes = fp8(v·s), scale_inv = 1/s.
// The current recipe needs the amax before the cast, so it has no one-pass form: it keeps the
// unfused path (amax pass, reduction over ranks, cast).
//
//   ops::Fp8Quantize q{.scale = &scale, .codes = &codes, .amax = &amax};
//   MF_RETURN_IF_ERROR(ops::SwiGluFp8(gate_up, q, &act, stream));   // act may be null
#pragma once

#include "absl/status/status.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// Where a fused producer puts its (M, N) output v in FP8. The codes' dtype (kFp8E4M3 or
// kFp8E5M2) picks the format. All tensors on the producer's device.
struct Fp8Quantize {
  // Per tensor: (1) f32. Null: 1×128 tiles (N must be a multiple of 128).
  const Tensor* scale = nullptr;
  Tensor* codes = nullptr;      // (M, N) fp8; required
  // Per tensor only, optional: (N, M_pad) fp8 with M_pad ≥ M, codes_t[j, i] = codes[i, j] and the
  // padding columns [M, M_pad) the code of +0 (the zero rows a wgrad GEMM's K is padded with).
  Tensor* codes_t = nullptr;
  Tensor* amax = nullptr;       // per tensor only, optional: (1) f32, accumulated (max)
  Tensor* scale_inv = nullptr;  // tiles only, required: (M, N/128) f32
  bool pow2 = false;            // tiles only: scales rounded down to powers of two
};

// y = RMSNorm(x)·w (ops::RmsNormForward), quantised. x (M, N) and w (N) f32 or bf16 (one dtype);
// rstd (M) f32 (always written, saved for backward); y (M, N) in x's dtype or null when the caller
// needs only the codes. InvalidArgument naming N for tiles when N is not a multiple of 128.
absl::Status RmsNormFp8(const Tensor& x, const Tensor& w, float eps, const Fp8Quantize& q,
                        Tensor* y, Tensor* rstd, Stream& stream);

// The pre-norm residual step (ops::AddRmsNormForward) with y quantised: sum = x + residual (the
// new residual stream, rounded to its dtype and always written), y = RMSNorm(sum)·w. x,
// residual, sum (M, N) and w (N) in one dtype; y as for RmsNormFp8.
absl::Status AddRmsNormFp8(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                           const Fp8Quantize& q, Tensor* sum, Tensor* y, Tensor* rstd,
                           Stream& stream);

// act = silu(gate)·up (ops::SwiGluForward), quantised: gate_up (M, 2F), act (M, F) in gate_up's
// dtype or null; the quantised tensor is act (M, F). InvalidArgument for tiles when F is not a
// multiple of 128.
absl::Status SwiGluFp8(const Tensor& gate_up, const Fp8Quantize& q, Tensor* act, Stream& stream);

// d_gate_up (ops::SwiGluBackward), quantised (typically in the gradient format): gate_up (M, 2F),
// d_act (M, F), d_gate_up (M, 2F) in gate_up's dtype or null (it must not alias gate_up here);
// the quantised tensor is d_gate_up (M, 2F), tiles along its rows of 2F. InvalidArgument for
// tiles when 2F is not a multiple of 128.
absl::Status SwiGluBackwardFp8(const Tensor& gate_up, const Tensor& d_act, const Fp8Quantize& q,
                               Tensor* d_gate_up, Stream& stream);

}  // namespace moefold::ops
