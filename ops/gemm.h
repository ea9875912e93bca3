// Matrix multiply: the one entry point every linear layer uses.
// CPU: OpenBLAS sgemm (bf16 emulated: ops/cpu/bf16_emulation.h). CUDA: cuBLASLt with f32
// accumulation. Both: a and b f32 or bf16, c f32 or a's dtype (bf16 inputs with an f32 c
// accumulate weight gradients in f32).
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// C = alpha · op(A) · op(B) + beta · C, with op(X) = Xᵀ when trans_x.
// a: (M, K), or (K, M) if trans_a; b: (K, N), or (N, K) if trans_b; c: (M, N); all rank 2.
// a and b f32 or bf16 (one dtype), c f32 or theirs. beta = 1 accumulates into C (used by backward
// passes); beta = 0 ignores C's old contents. On the GPU the algorithm is chosen once per bucket
// of row counts (ops/cuda/blas.h), so a GEMM whose M changes every call costs no new search.
void Gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, float alpha, float beta,
          Tensor* c, Stream& stream);

// y = x · Wᵀ (a Hugging Face / PyTorch Linear without bias). x (T, in), w (out, in), y (T, out).
void LinearForward(const Tensor& x, const Tensor& w, Tensor* y, Stream& stream);
// y = x · Wᵀ + bias (bias (out) broadcast over rows); on the GPU the add is cuBLASLt's bias
// epilogue of the same matmul. x (T, in), w (out, in), bias (out), y (T, out).
void LinearBiasForward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor* y,
                       Stream& stream);
// d_x = d_y · W (overwritten when d_x is non-null); d_w += d_yᵀ · x (accumulated when non-null).
void LinearBackward(const Tensor& x, const Tensor& w, const Tensor& d_y, Tensor* d_x, Tensor* d_w,
                    Stream& stream);

}  // namespace moefold::ops
