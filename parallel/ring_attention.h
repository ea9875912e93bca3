// Context-parallel causal attention as a ring (docs/ARCHITECTURE.md §5.4): each rank holds the
// tokens of its chunks (rank i: chunks i and 2·CP−1−i, so causal work is balanced) with their
// GLOBAL positions. K/V blocks circulate over the CP group; partial results merge by online softmax
// (running max, sum and accumulator per query). Backward circulates K/V together with their
// accumulating dK/dV, so after CP hops every block returns to its owner with its full gradient.
// Equal to the single-rank attention on the whole sequence
// (tests/parallel/ring_attention_mpi_test.cc).
#pragma once

#include "absl/status/status.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace moefold::parallel {

// q (B, S_local, Hq, D), k and v (B, S_local, Hkv, D), positions (S_local) i32 global positions of
// this rank's tokens (the same for every rank's block layout: a key is visible to a query when
// key_pos <= query_pos). out (B, S_local, Hq, D), lse (B, Hq, S_local).
absl::Status RingAttentionForward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& positions, float scale, Communicator& cp,
                                  Tensor* out, Tensor* lse);
// d_q, d_k, d_v overwritten (shapes of q, k, v).
absl::Status RingAttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& positions, const Tensor& out, const Tensor& lse,
                                   const Tensor& d_out, float scale, Communicator& cp, Tensor* d_q,
                                   Tensor* d_k, Tensor* d_v);

// The global positions of rank `rank`'s tokens when a sequence of length seq_len is cut into
// 2·cp chunks and rank i holds chunks i and 2·cp−1−i. seq_len % (2·cp) == 0 (checked).
Tensor ContextParallelPositions(int64_t seq_len, int cp, int rank);

}  // namespace moefold::parallel
