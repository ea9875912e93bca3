// Token permutation fused with FP8 quantisation: the MoE layer's routed rows are cast to FP8
// while they are permuted, so the expert-parallel all-to-all moves 1-byte codes (and their
// scales) instead of bf16/f32 rows, and the expert GEMM consumes the received codes directly
// (docs/FORMULAS.md §18.4). Invariant: the result is, bit for bit,
// PermuteTokens followed by the quantisation op of the recipe (CastTransposeAmax per tensor,
// QuantizeBlockwise in 1×128 tiles), on both devices — quantising a row does not depend on where
// the row sits.
//
//   MF_RETURN_IF_ERROR(ops::PermuteQuantize(x, sorted, k, scale, scale_inv, {}, &codes,
//                                           &row_scale_inv, &amax, stream));
#pragma once

#include "absl/status/status.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

struct PermuteQuantizeOptions {
  // false: one per-tensor scale (delayed and current recipes). true: 1×128 tiles along H, each
  // with its own scale (the blockwise recipe, ops::kFp8ActivationTile).
  bool tiles = false;
  bool pow2 = false;  // tiles: scales rounded down to powers of two (Fp8ScaleFromAmax)
};

// With r a row of the output and t = sorted[r] / k its token (ops/moe.h's PermuteTokens):
//   per tensor: codes[r, j] = fp8(x[t, j]·scale) as CastTransposeAmax; row_scale_inv[r, 0] =
//               scale_inv (every row carries the tensor's dequantisation scale, so rows of
//               several senders can meet in one GEMM); amax = max(amax, max|permuted rows|).
//   tiles:      codes[r, 128b : 128b+128] and row_scale_inv[r, b] as QuantizeBlockwise of the
//               permuted row's tile b (scale and scale_inv unused, amax must be null).
// x (T, H) f32 or bf16; sorted (N) i32 entries in [0, T·k); codes (N, H) kFp8E4M3 or kFp8E5M2
// (picks the format); scale, scale_inv (1) f32 (per tensor); row_scale_inv (N, 1) per tensor or
// (N, H/128) tiles, f32, may be null per tensor; amax (1) f32 or null (accumulated, not zeroed).
// All on x's device. InvalidArgument when tiles and H is not a multiple of 128.
absl::Status PermuteQuantize(const Tensor& x, const Tensor& sorted, int k, const Tensor& scale,
                             const Tensor& scale_inv, const PermuteQuantizeOptions& options,
                             Tensor* codes, Tensor* row_scale_inv, Tensor* amax, Stream& stream);

}  // namespace moefold::ops
