// Tensor-parallel building blocks (Megatron-LM): column- and row-parallel linears, with optional
// sequence parallelism, and the vocabulary-parallel cross entropy. Each takes this rank's weight
// shard and the TP communicator; with tp = 1 they equal the single-rank ops exactly.
//   column: W (out, in) split by rows; y_r = x · W_rᵀ (T, out/tp). SP: x arrives split along T
//           and is all-gathered first; backward reduce-scatters d_x along T (else all-reduces it).
//   row:    W split by columns; x_r (T, in/tp); y = Σ_r x_r · W_rᵀ, all-reduced, or reduce-scattered
//           along T under SP; backward all-gathers d_y along T under SP.
//   vocab-parallel CE: logits (N, V/tp) of the vocabulary slice [offset, offset + V/tp); per-token
//           losses are exact: the max, the Σexp and the target logit are reduced over TP.
// The layers are built from two region mappings (Megatron's): TpGather enters a TP region (the
// forward of a column-parallel input, the backward of a row-parallel output) and TpReduce leaves one;
// each is the other's backward. A null or size-1 `tp` makes both the identity (no copy).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/parameter.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace moefold::parallel {

// x (T_local, H) -> *full: with sequence_parallel the rows of every TP rank in rank order
// (T_local·tp, H), else x itself (activations are replicated across TP).
absl::Status TpGather(const Tensor& x, Communicator* tp, bool sequence_parallel, Tensor* full);
// partial (T, H), a partial sum on each TP rank -> *out: with sequence_parallel the reduce-scatter
// along T (rows [r·T/tp, (r+1)·T/tp) of the sum), else the all-reduced sum (T, H). `partial` may be
// overwritten.
absl::Status TpReduce(const Tensor& partial, Communicator* tp, bool sequence_parallel, Tensor* out);

// Vocabulary-parallel embedding: table (V_local, H) holds ids [vocab_offset, vocab_offset +
// V_local); ids (T) i32 global. out = TpReduce(rows of in-range ids, zeros elsewhere): (T/tp, H)
// with sequence_parallel, (T, H) without.
absl::Status VocabParallelEmbeddingForward(const Tensor& ids, const Tensor& table,
                                           int64_t vocab_offset, Communicator* tp,
                                           bool sequence_parallel, Tensor* out);
// d_out shaped like out -> d_table (V_local, H) += the rows of in-range ids.
absl::Status VocabParallelEmbeddingBackward(const Tensor& ids, const Tensor& d_out,
                                            int64_t vocab_offset, Communicator* tp,
                                            bool sequence_parallel, Tensor* d_table);

// The unsharded value (or gradient, with `grad`) of a parameter split over `tp` along
// sharding.tp_dim, assembled from every TP rank's shard (collective over tp; shards may be uneven,
// see ShardRange). Unsplit parameters come back as a copy.
absl::StatusOr<Tensor> GatherTpShards(const Parameter& param, Communicator* tp, bool grad = false);
// The whole parameter from every model-parallel shard: dense ones over `tp`; expert ones over
// `etp` (their FFN slice), then over `ep` (their experts, dimension 0). Collective over those.
absl::StatusOr<Tensor> GatherParameter(const Parameter& param, Communicator* tp, Communicator* etp,
                                       Communicator* ep);

// x (T, in) — or (T/tp, in) with sequence_parallel; w (out/tp, in); y (T, out/tp).
// x_full (T, in) receives the gathered input (saved for backward; x itself without SP).
absl::Status ColumnParallelLinearForward(const Tensor& x, const Tensor& w, Communicator& tp,
                                         bool sequence_parallel, Tensor* x_full, Tensor* y);
// d_y (T, out/tp) -> d_x (T, in) or (T/tp, in) with SP (overwritten); d_w += d_yᵀ x_full.
absl::Status ColumnParallelLinearBackward(const Tensor& x_full, const Tensor& w, const Tensor& d_y,
                                          Communicator& tp, bool sequence_parallel, Tensor* d_x,
                                          Tensor* d_w);

// x (T, in/tp); w (out, in/tp); y (T, out) — or (T/tp, out) with sequence_parallel.
absl::Status RowParallelLinearForward(const Tensor& x, const Tensor& w, Communicator& tp,
                                      bool sequence_parallel, Tensor* y);
// d_y (T, out) or (T/tp, out) with SP -> d_x (T, in/tp) (overwritten); d_w += d_y_fullᵀ x.
absl::Status RowParallelLinearBackward(const Tensor& x, const Tensor& w, const Tensor& d_y,
                                       Communicator& tp, bool sequence_parallel, Tensor* d_x,
                                       Tensor* d_w);

// logits (N, V/tp) f32 for vocabulary ids [vocab_offset, vocab_offset + V/tp); targets (N) i32
// (global ids, −1 ignored) -> token_losses (N) (identical on every TP rank), lse (N) saved.
absl::Status VocabParallelCrossEntropyForward(const Tensor& logits, const Tensor& targets,
                                              int64_t vocab_offset, Communicator& tp,
                                              Tensor* token_losses, Tensor* lse);
// d_logits (N, V/tp) = d_loss · (softmax − onehot) restricted to this slice (overwritten).
void VocabParallelCrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                       int64_t vocab_offset, const Tensor& lse,
                                       const Tensor& d_token_losses, Tensor* d_logits);

}  // namespace moefold::parallel
