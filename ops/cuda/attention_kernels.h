// The two GPU implementations behind the attention ops (internal to ops/cuda): flash kernels on the
// tensor cores (bf16, head dim 64 or 128, query and key lengths multiples of 64) and row kernels
// (one warp per query or key row, f32 math, any dtype of the two and head dim ≤ 256) for the rest.
// Both take a query block against a key/value block, causal (the single-sequence op and a ring's
// diagonal blocks, Sq == Skv) or full (a ring's earlier blocks).
#pragma once

#include <cstdint>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops::cuda {

// A single-sequence problem (the cuDNN graphs' terms): S queries over the same S keys, causal.
struct AttentionDims {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
};

// A query block (Sq rows) against a key/value block (Skv rows); causal needs Sq == Skv.
struct AttentionBlockDims {
  int64_t batch, q_seq, kv_seq, q_heads, kv_heads, head_dim;
  bool causal;
};

inline AttentionBlockDims CausalBlock(const AttentionDims& d) {
  return {d.batch, d.seq, d.seq, d.q_heads, d.kv_heads, d.head_dim, true};
}

// Forward: out (B, Sq, Hq, D) in q's dtype or f32 (the block op's unrounded partial), lse f32.
// Backward: d_q, d_k, d_v in q's dtype and overwritten (`accumulate` false: the single-sequence
// op), or f32 and added to (`accumulate` true: the block op). Everything else as ops/attention.h.
bool FlashAttentionSupports(const AttentionBlockDims& d, DType dtype);
void FlashAttentionForward(const AttentionBlockDims& d, const Tensor& q, const Tensor& k,
                           const Tensor& v, float scale, Tensor* out, Tensor* lse,
                           const Stream& stream);
void FlashAttentionBackward(const AttentionBlockDims& d, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Tensor& out, const Tensor& lse,
                            const Tensor& d_out, float scale, bool accumulate, Tensor* d_q,
                            Tensor* d_k, Tensor* d_v, const Stream& stream);

inline constexpr int64_t kRowAttentionMaxHeadDim = 256;
void RowAttentionForward(const AttentionBlockDims& d, const Tensor& q, const Tensor& k,
                         const Tensor& v, float scale, Tensor* out, Tensor* lse,
                         const Stream& stream);
void RowAttentionBackward(const AttentionBlockDims& d, const Tensor& q, const Tensor& k,
                          const Tensor& v, const Tensor& out, const Tensor& lse,
                          const Tensor& d_out, float scale, bool accumulate, Tensor* d_q,
                          Tensor* d_k, Tensor* d_v, const Stream& stream);

}  // namespace moefold::ops::cuda
