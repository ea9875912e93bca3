// Tensor-parallel building blocks (Megatron-LM): the TP region mappings the column- and
// row-parallel layers are built from, the vocabulary-parallel embedding and cross entropy, and the
// gathering of TP-sharded parameters. With tp = 1 they equal the single-rank ops exactly.
//   column-parallel linear (W split by rows): x_full = TpGather(x); y_r = x_full · W_rᵀ;
//           d_x = TpReduce(d_y_r · W_r).
//   row-parallel linear (W split by columns): y = TpReduce(x_r · W_rᵀ); d_x_r = TpGather(d_y)·W_r.
//   vocabulary-parallel embedding, head and CE: table and head (V/tp, H) hold the vocabulary slice
//           [offset, offset + V/tp); per-token losses are exact, from every slice's partials.
// TpGather enters a TP region (the forward of a column-parallel input, the backward of a
// row-parallel output) and TpReduce leaves one; each is the other's backward. With sequence
// parallelism the activations outside a region are split along T over TP (all-gather in,
// reduce-scatter out), else replicated (identity in, all-reduce out). A null or size-1 `tp` makes
// both the identity (no copy).
// One code path for every device: the tensors stay where they are (CPU or the stream's GPU) and
// in their dtype (f32 or bf16 activations; the communicator reduces bf16 in f32 and rounds once);
// only the kernels (ops/) and the communicator backend differ.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/parameter.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace moefold::parallel {

// x (T_local, H) -> *full: with sequence_parallel the rows of every TP rank in rank order
// (T_local·tp, H), else x itself (activations are replicated across TP). Any dtype, on x's device.
absl::Status TpGather(const Tensor& x, Communicator* tp, bool sequence_parallel, Tensor* full);
// partial (T, H), a partial sum on each TP rank -> *out: with sequence_parallel the reduce-scatter
// along T (rows [r·T/tp, (r+1)·T/tp) of the sum), else the all-reduced sum (T, H). `partial` may be
// overwritten. Any dtype the communicator sums (bf16 is summed in f32), on partial's device.
// InvalidArgument when T does not split over tp under sequence_parallel.
absl::Status TpReduce(const Tensor& partial, Communicator* tp, bool sequence_parallel, Tensor* out);

// Vocabulary-parallel embedding: table (V_local, H) f32 or bf16 holds ids [vocab_offset,
// vocab_offset + V_local); ids (T) i32 global, on the table's device (a micro-batch's device copy),
// each in [0, V) (callers check their host copies). *out (allocated here, the table's dtype and
// device) = TpReduce(the rows of this slice's ids, zeros for the others): (T/tp, H) with
// sequence_parallel, (T, H) without. Status: a failed collective.
absl::Status VocabParallelEmbeddingForward(const Tensor& ids, const Tensor& table,
                                           int64_t vocab_offset, Communicator* tp,
                                           bool sequence_parallel, Tensor* out, Stream& stream);
// d_out shaped like out (the table's dtype) -> d_table (V_local, H) f32 += the rows of this
// slice's ids of TpGather(d_out). Status: a failed collective.
absl::Status VocabParallelEmbeddingBackward(const Tensor& ids, const Tensor& d_out,
                                            int64_t vocab_offset, Communicator* tp,
                                            bool sequence_parallel, Tensor* d_table,
                                            Stream& stream);

// logits (N, V_local) f32 or bf16 of the vocabulary ids [vocab_offset, vocab_offset + V_local);
// targets (N) i32 global ids (−1 ignored) on the logits' device -> token_losses (N) f32 and lse
// (N) f32 (saved for the backward), the same on every TP rank: each rank's (max, Σexp, target
// logit) partials (ops::CrossEntropyShardPartials) are all-gathered over TP and merged
// (ops::CrossEntropyFromShardPartials). Status: a failed collective.
absl::Status VocabParallelCrossEntropyForward(const Tensor& logits, const Tensor& targets,
                                              int64_t vocab_offset, Communicator* tp,
                                              Tensor* token_losses, Tensor* lse, Stream& stream);
// d_logits (N, V_local) in the logits' dtype = d_loss · (softmax − onehot) restricted to this
// slice (overwritten; may alias logits), from the merged lse. No communication.
void VocabParallelCrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                       int64_t vocab_offset, Communicator* tp, const Tensor& lse,
                                       const Tensor& d_token_losses, Tensor* d_logits,
                                       Stream& stream);

// The unsharded value (or gradient, with `grad`) of a parameter split over `tp` along
// sharding.tp_dim, assembled from every TP rank's shard (collective over tp; shards may be uneven,
// see ShardRange), as a host f32 tensor wherever the parameter lives (for checkpoints and tests,
// not the step). Unsplit parameters come back as a host copy.
absl::StatusOr<Tensor> GatherTpShards(const Parameter& param, Communicator* tp, bool grad = false);
// The whole parameter from every model-parallel shard, on the host: dense ones over `tp`; expert
// ones over `etp` (their FFN slice), then over `ep` (their experts, dimension 0). Collective over
// those.
absl::StatusOr<Tensor> GatherParameter(const Parameter& param, Communicator* tp, Communicator* etp,
                                       Communicator* ep);

}  // namespace moefold::parallel
