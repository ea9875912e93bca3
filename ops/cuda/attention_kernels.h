// The two GPU implementations behind AttentionForward/Backward (internal to ops/cuda): flash
// kernels on the tensor cores (bf16, head dim 64 or 128, S a multiple of 64) and row kernels (one
// warp per query or key row, f32 math, any dtype of the two and head dim ≤ 256) for the rest.
#pragma once

#include <cstdint>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops::cuda {

struct AttentionDims {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
};

bool FlashAttentionSupports(const AttentionDims& d, DType dtype);
void FlashAttentionForward(const AttentionDims& d, const Tensor& q, const Tensor& k,
                           const Tensor& v, float scale, Tensor* out, Tensor* lse,
                           const Stream& stream);
void FlashAttentionBackward(const AttentionDims& d, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Tensor& out, const Tensor& lse,
                            const Tensor& d_out, float scale, Tensor* d_q, Tensor* d_k, Tensor* d_v,
                            const Stream& stream);

inline constexpr int64_t kRowAttentionMaxHeadDim = 256;
void RowAttentionForward(const AttentionDims& d, const Tensor& q, const Tensor& k, const Tensor& v,
                         float scale, Tensor* out, Tensor* lse, const Stream& stream);
void RowAttentionBackward(const AttentionDims& d, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, const Tensor& d_out, float scale,
                          Tensor* d_q, Tensor* d_k, Tensor* d_v, const Stream& stream);

}  // namespace moefold::ops::cuda
