// TP region mappings, the vocabulary-parallel embedding and cross entropy (device ops around one
// collective each), and the gathering of TP-sharded parameters.
#include "parallel/tensor_parallel.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "ops/embedding.h"
#include "ops/loss.h"

namespace moefold::parallel {

absl::Status TpGather(const Tensor& x, Communicator* tp, bool sequence_parallel, Tensor* full) {
  if (!sequence_parallel || IsSingleRank(tp)) {
    *full = x;
    return absl::OkStatus();
  }
  Shape shape = x.shape();
  shape[0] *= tp->size();
  *full = Tensor::Empty(shape, x.dtype(), x.device());
  return WaitFor(tp->AllGather(x, full, {}));
}

absl::Status TpReduce(const Tensor& partial, Communicator* tp, bool sequence_parallel,
                      Tensor* out) {
  if (IsSingleRank(tp)) {
    *out = partial;
    return absl::OkStatus();
  }
  if (!sequence_parallel) {
    Tensor sum = partial;
    MF_RETURN_IF_ERROR(WaitFor(tp->AllReduce(&sum, {})));
    *out = sum;
    return absl::OkStatus();
  }
  if (partial.dim(0) % tp->size() != 0) {
    return absl::InvalidArgumentError(absl::StrCat("sequence-parallel reduce-scatter of ",
                                                   partial.DebugString(), ": ", partial.dim(0),
                                                   " rows do not split over tp ", tp->size()));
  }
  Shape shape = partial.shape();
  shape[0] /= tp->size();
  *out = Tensor::Empty(shape, partial.dtype(), partial.device());
  return WaitFor(tp->ReduceScatter(partial, out, {}));
}

absl::Status VocabParallelEmbeddingForward(const Tensor& ids, const Tensor& table,
                                           int64_t vocab_offset, Communicator* tp,
                                           bool sequence_parallel, Tensor* out, Stream& stream) {
  const int64_t t = ids.numel(), h = table.dim(1);
  Tensor partial = Tensor::Empty({t, h}, table.dtype(), table.device());
  if (IsSingleRank(tp)) {
    MF_CHECK_EQ(vocab_offset, 0) << "a single TP rank holds the whole vocabulary";
    ops::EmbeddingForward(ids, table, &partial, stream);
    *out = partial;
    return absl::OkStatus();
  }
  // Each token's row is on one rank and zeros on the others, so the sum over TP is exact in any
  // dtype.
  ops::EmbeddingShardForward(ids, table, vocab_offset, &partial, stream);
  return TpReduce(partial, tp, sequence_parallel, out);
}

absl::Status VocabParallelEmbeddingBackward(const Tensor& ids, const Tensor& d_out,
                                            int64_t vocab_offset, Communicator* tp,
                                            bool sequence_parallel, Tensor* d_table,
                                            Stream& stream) {
  if (IsSingleRank(tp)) {
    MF_CHECK_EQ(vocab_offset, 0) << "a single TP rank holds the whole vocabulary";
    ops::EmbeddingBackward(ids, d_out, d_table, stream);
    return absl::OkStatus();
  }
  Tensor d_full;
  MF_RETURN_IF_ERROR(TpGather(d_out, tp, sequence_parallel, &d_full));
  ops::EmbeddingShardBackward(ids, d_full, vocab_offset, d_table, stream);
  return absl::OkStatus();
}

absl::Status VocabParallelCrossEntropyForward(const Tensor& logits, const Tensor& targets,
                                              int64_t vocab_offset, Communicator* tp,
                                              Tensor* token_losses, Tensor* lse, Stream& stream) {
  if (IsSingleRank(tp)) {
    MF_CHECK_EQ(vocab_offset, 0) << "a single TP rank holds the whole vocabulary";
    ops::CrossEntropyForward(logits, targets, token_losses, lse, stream);
    return absl::OkStatus();
  }
  // One all-gather of every slice's (max, Σexp, target logit) instead of a max all-reduce and a
  // sum all-reduce: the logits are read once and each rank merges the same partials in rank order.
  const int64_t n = logits.dim(0);
  Tensor partials = Tensor::Empty({3, n}, DType::kF32, logits.device());
  ops::CrossEntropyShardPartials(logits, targets, vocab_offset, &partials, stream);
  Tensor all = Tensor::Empty({tp->size(), 3, n}, DType::kF32, logits.device());
  MF_RETURN_IF_ERROR(WaitFor(tp->AllGather(partials, &all, {})));
  ops::CrossEntropyFromShardPartials(all, targets, token_losses, lse, stream);
  return absl::OkStatus();
}

void VocabParallelCrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                       int64_t vocab_offset, Communicator* tp, const Tensor& lse,
                                       const Tensor& d_token_losses, Tensor* d_logits,
                                       Stream& stream) {
  if (IsSingleRank(tp)) {
    MF_CHECK_EQ(vocab_offset, 0) << "a single TP rank holds the whole vocabulary";
    ops::CrossEntropyBackward(logits, targets, lse, d_token_losses, d_logits, stream);
    return;
  }
  ops::CrossEntropyShardBackward(logits, targets, vocab_offset, lse, d_token_losses, d_logits,
                                 stream);
}

absl::StatusOr<Tensor> GatherTpShards(const Parameter& param, Communicator* tp, bool grad) {
  // Assembled on the host: a parameter on a GPU is copied over once (To returns a host tensor
  // itself).
  const Tensor& source = grad ? param.grad : param.value;
  const Tensor mine = source.To(Device::Cpu());
  const Sharding& sh = param.sharding;
  if (sh.tp_dim < 0 || sh.tp_size == 1) return source.device().is_cpu() ? mine.Clone() : mine;
  if (tp == nullptr || tp->size() != sh.tp_size || tp->rank() != sh.tp_rank) {
    return absl::InvalidArgumentError(absl::StrCat(
        param.name, " is shard ", sh.tp_rank, " of ", sh.tp_size, " but the group has ",
        tp == nullptr ? 1 : tp->size(), " member(s)"));
  }
  // The whole tensor along tp_dim; an expert shard keeps its own experts (EP gathers them).
  Shape g = sh.global_shape;
  if (sh.expert_dim == 0) g[0] = mine.dim(0);
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < sh.tp_dim; ++i) outer *= g[i];
  for (size_t i = sh.tp_dim + 1; i < g.size(); ++i) inner *= g[i];
  // Every shard padded to the largest (the first) so the all-gather moves equal pieces.
  const int64_t rows = g[sh.tp_dim], chunk = ShardRange(rows, 0, sh.tp_size).second;
  const int64_t local_rows = mine.dim(sh.tp_dim);
  Tensor padded = Tensor::Zeros({outer, chunk, inner}, DType::kF32);
  for (int64_t o = 0; o < outer; ++o) {
    std::copy_n(mine.data<float>() + o * local_rows * inner, local_rows * inner,
                padded.data<float>() + o * chunk * inner);
  }
  Tensor all = Tensor::Empty({sh.tp_size * outer * chunk * inner}, DType::kF32);
  MF_RETURN_IF_ERROR(WaitFor(tp->AllGather(padded.Reshape({outer * chunk * inner}), &all, {})));
  Tensor full = Tensor::Empty(g, DType::kF32);
  for (int r = 0; r < sh.tp_size; ++r) {
    const auto [begin, end] = ShardRange(rows, r, sh.tp_size);
    for (int64_t o = 0; o < outer; ++o) {
      std::copy_n(all.data<float>() + (r * outer + o) * chunk * inner, (end - begin) * inner,
                  full.data<float>() + (o * rows + begin) * inner);
    }
  }
  return full;
}

absl::StatusOr<Tensor> GatherParameter(const Parameter& param, Communicator* tp, Communicator* etp,
                                       Communicator* ep) {
  const bool expert = param.reduction == GradReduction::kExpertData;
  MF_ASSIGN_OR_RETURN(Tensor whole, GatherTpShards(param, expert ? etp : tp));
  const Sharding& sh = param.sharding;
  if (!expert || sh.expert_dim != 0 || whole.dim(0) == sh.global_shape[0]) return whole;
  const int n = ep == nullptr ? 1 : ep->size();
  if (whole.dim(0) * n != sh.global_shape[0]) {
    return absl::InvalidArgumentError(absl::StrCat(param.name, " holds ", whole.dim(0), " of ",
                                                   sh.global_shape[0], " experts but ep has ", n,
                                                   " member(s)"));
  }
  Tensor all = Tensor::Empty({whole.numel() * n}, DType::kF32);  // expert blocks in EP rank order
  MF_RETURN_IF_ERROR(WaitFor(ep->AllGather(whole.Reshape({whole.numel()}), &all, {})));
  return all.Reshape(sh.global_shape);
}

}  // namespace moefold::parallel
