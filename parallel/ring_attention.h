// Context-parallel causal attention as a ring (docs/ARCHITECTURE.md §5.4), built on the attention
// ops: the sequence is cut into 2·CP chunks and rank i holds chunks i and 2·CP−1−i (so causal work
// is balanced). K/V blocks circulate over the CP group; at each hop every pair (my query chunk,
// visiting key chunk) is full (key chunk earlier), causal (the same chunk) or skipped (later), and
// the block partials merge by online softmax (ops::AttentionMerge). Backward recomputes each block
// from the final out and lse (ops::AttentionBlockBackward) and sends dK/dV along with a one-hop
// lag, so after CP hops every block's gradient is home. The next hop's K/V (and the travelling
// dK/dV) are sent and received while the current block computes. One code path for every device and
// dtype: tensors stay where they are, in the activation dtype; partial outputs and gradients
// accumulate in f32 and are rounded once. Equal to the single-rank attention on the whole sequence
// (tests/parallel/ring_attention_mpi_test.cc).
#pragma once

#include "absl/status/status.h"
#include "core/profiler.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace moefold::parallel {

struct RingAttentionOptions {
  // When set, the waits for the exchanges (the part of the K/V and dK/dV traffic not hidden behind
  // the block computations) are timed as OpFamily::kCommunication of `layer`.
  Profiler* profiler = nullptr;
  int layer = -1;
};

// q (B, S, Hq, D), k and v (B, S, Hkv, D): this rank's S = 2·c tokens, chunk rank then chunk
// 2·CP−1−rank of the CP group `cp` (ContextParallelPositions), f32 or bf16 (one dtype), on the
// device of `stream`, the compute stream (the communicators order their work after the device's
// default stream, where the trainer computes). out (B, S, Hq, D) in their dtype; lse (B, Hq, S)
// f32, the natural-log log-sum-exp over every visible key of the whole sequence. Errors: the
// communicator's (a peer lost, a timeout).
absl::Status RingAttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                                  Communicator& cp, Tensor* out, Tensor* lse, Stream& stream,
                                  const RingAttentionOptions& options = {});
// From the forward's out and lse: d_q, d_k, d_v overwritten (shapes and dtype of q, k, v).
absl::Status RingAttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& out, const Tensor& lse, const Tensor& d_out,
                                   float scale, Communicator& cp, Tensor* d_q, Tensor* d_k,
                                   Tensor* d_v, Stream& stream,
                                   const RingAttentionOptions& options = {});

// The global positions of rank `rank`'s tokens when a sequence of length seq_len is cut into
// 2·cp chunks and rank i holds chunks i and 2·cp−1−i. seq_len % (2·cp) == 0 (checked).
Tensor ContextParallelPositions(int64_t seq_len, int cp, int rank);

}  // namespace moefold::parallel
