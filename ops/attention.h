// Causal grouped-query attention (the unfused reference; the GPU uses a fused kernel).
// Query head h reads KV head h / (Hq / Hkv). scale is usually 1/sqrt(D).
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): q, k, v, out and the gradients f32
// or bf16 (one dtype), lse f32; bf16 with head dim 64/128 and S % 64 == 0 runs flash kernels, the
// rest row kernels.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// q (B, S, Hq, D), k and v (B, S, Hkv, D), Hq % Hkv == 0, f32 or bf16 (one dtype).
// out (B, S, Hq, D) in their dtype; lse (B, Hq, S) f32 = log-sum-exp of each query's scaled, masked
// scores, saved so backward rebuilds the probabilities without storing them (flash-attention
// style).
void AttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                      Tensor* lse, Stream& stream);
// d_q, d_k, d_v overwritten (same shapes as q, k, v).
void AttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                       const Tensor& lse, const Tensor& d_out, float scale, Tensor* d_q,
                       Tensor* d_k, Tensor* d_v, Stream& stream);

}  // namespace moefold::ops
