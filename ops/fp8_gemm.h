// The FP8 matrix multiply of the FP8 recipes, in the one layout Hopper's FP8 tensor cores take
// (both operands K-major, "TN"), and the transpose that makes K-major copies for the backward.
// Invariant: the CPU computes what the GPU's FP8 GEMM computes up to the order of the f32 sums —
// the codes' exact values multiplied in f32, each K block's partial sum multiplied by the two
// operands' dequantisation scales and added in f32 (docs/FORMULAS.md §18.2).
//
//   ops::Fp8Gemm(a, sa, b, sb, {.block_k = 128}, /*beta=*/0, &c, stream);   // c = a·bᵀ, scaled
//   ops::TransposePad(x, &x_t, stream);                                       // (M, N) → (N, M')
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

struct Fp8GemmOptions {
  // 0: per-tensor scales (a_scale_inv and b_scale_inv hold one value each). 128: blockwise — the
  // K dimension is cut into blocks of block_k and each block's partial product is promoted to f32
  // with its own scales (K % block_k == 0).
  int64_t block_k = 0;
  // cuBLASLt's fast accumulation (no periodic promotion of the tensor cores' partial sums): the
  // per-tensor recipes use it in the forward only. The CPU ignores it (it always sums in f32).
  bool fast_accumulation = false;
};

// c = Σ_b (a[:, K_b] · b[:, K_b]ᵀ) · a_scale_inv[i / ra, b] · b_scale_inv[j / rb, b] + beta·c
// with K_b the b-th block of K (all of K per tensor), ra = M / a_scale_inv.dim(0) and
// rb = N / b_scale_inv.dim(0) the rows sharing a scale (1 for activation tiles, 128 for weight
// blocks, M or N per tensor).
// a (M, K) and b (N, K) FP8 (kFp8E4M3 or kFp8E5M2, each its own); a_scale_inv (M/ra, K/block_k)
// and b_scale_inv (N/rb, K/block_k) f32 ((1) or (1, 1) per tensor); c (M, N) f32 or bf16; beta 0
// (c overwritten) or 1 (accumulated); all on one device. InvalidArgument (naming the operand) for
// shapes that do not fit; K == 0 leaves beta·c. Per-row scales with block_k 0 (a_scale_inv (M, 1),
// the FP8 token dispatch's rows) run the blockwise kernel on the GPU as one block of all of K
// (cuBLASLt on sm_90 takes one scale per operand): InvalidArgument there unless K % 32 == 0.
absl::Status Fp8Gemm(const Tensor& a, const Tensor& a_scale_inv, const Tensor& b,
                     const Tensor& b_scale_inv, const Fp8GemmOptions& options, float beta,
                     Tensor* c, Stream& stream);

// y[j, i] = x[i, j] for i < M, and y[j, i] = 0 for M ≤ i < M' (zero padding of the transposed
// rows, so a K made of token rows reaches a multiple of the quantisation block). x (M, N) and y
// (N, M') with M' ≥ M, one dtype of 1, 2 or 4 bytes, on one device.
void TransposePad(const Tensor& x, Tensor* y, Stream& stream);

}  // namespace moefold::ops
