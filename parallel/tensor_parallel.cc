// Column/row-parallel linears with sequence parallelism, and the vocabulary-parallel cross entropy.
#include "parallel/tensor_parallel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/embedding.h"
#include "ops/gemm.h"

namespace moefold::parallel {

namespace {

// ids (T) global -> ids local to [offset, offset + rows) clamped to a valid row, and whether each
// was in range (rows outside it contribute nothing).
std::vector<bool> LocalIds(const Tensor& ids, int64_t offset, int64_t rows, Tensor* local) {
  *local = Tensor::Empty(ids.shape(), DType::kI32);
  std::vector<bool> mine(ids.numel());
  for (int64_t i = 0; i < ids.numel(); ++i) {
    const int64_t id = static_cast<int64_t>(ids.data<int32_t>()[i]) - offset;
    mine[i] = id >= 0 && id < rows;
    local->data<int32_t>()[i] = mine[i] ? static_cast<int32_t>(id) : 0;
  }
  return mine;
}

void ZeroRows(const std::vector<bool>& keep, Tensor* t) {
  const int64_t h = t->dim(1);
  for (size_t i = 0; i < keep.size(); ++i) {
    if (!keep[i]) std::fill_n(t->data<float>() + i * h, h, 0.0f);
  }
}

}  // namespace

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

absl::Status ColumnParallelLinearForward(const Tensor& x, const Tensor& w, Communicator& tp,
                                         bool sequence_parallel, Tensor* x_full, Tensor* y) {
  MF_RETURN_IF_ERROR(TpGather(x, &tp, sequence_parallel, x_full));
  ops::LinearForward(*x_full, w, y, CpuStream());
  return absl::OkStatus();
}

absl::Status ColumnParallelLinearBackward(const Tensor& x_full, const Tensor& w, const Tensor& d_y,
                                          Communicator& tp, bool sequence_parallel, Tensor* d_x,
                                          Tensor* d_w) {
  // Each rank holds a slice of the outputs, so its d_x is a partial sum over that slice.
  Tensor partial = Tensor::Empty(x_full.shape(), DType::kF32);
  ops::LinearBackward(x_full, w, d_y, &partial, d_w, CpuStream());
  Tensor reduced;
  MF_RETURN_IF_ERROR(TpReduce(partial, &tp, sequence_parallel, &reduced));
  d_x->CopyFrom(reduced);
  return absl::OkStatus();
}

absl::Status RowParallelLinearForward(const Tensor& x, const Tensor& w, Communicator& tp,
                                      bool sequence_parallel, Tensor* y) {
  Tensor partial = Tensor::Empty({x.dim(0), w.dim(0)}, DType::kF32);
  ops::LinearForward(x, w, &partial, CpuStream());
  Tensor reduced;
  MF_RETURN_IF_ERROR(TpReduce(partial, &tp, sequence_parallel, &reduced));
  y->CopyFrom(reduced);
  return absl::OkStatus();
}

absl::Status RowParallelLinearBackward(const Tensor& x, const Tensor& w, const Tensor& d_y,
                                       Communicator& tp, bool sequence_parallel, Tensor* d_x,
                                       Tensor* d_w) {
  Tensor d_y_full;
  MF_RETURN_IF_ERROR(TpGather(d_y, &tp, sequence_parallel, &d_y_full));
  ops::LinearBackward(x, w, d_y_full, d_x, d_w, CpuStream());
  return absl::OkStatus();
}

absl::Status VocabParallelEmbeddingForward(const Tensor& ids, const Tensor& table,
                                           int64_t vocab_offset, Communicator* tp,
                                           bool sequence_parallel, Tensor* out) {
  const int64_t t = ids.numel(), h = table.dim(1);
  Tensor partial = Tensor::Zeros({t, h}, DType::kF32);
  if (table.dim(0) > 0) {
    Tensor local;
    const std::vector<bool> mine = LocalIds(ids, vocab_offset, table.dim(0), &local);
    ops::EmbeddingForward(local, table, &partial, CpuStream());
    ZeroRows(mine, &partial);
  }
  return TpReduce(partial, tp, sequence_parallel, out);
}

absl::Status VocabParallelEmbeddingBackward(const Tensor& ids, const Tensor& d_out,
                                            int64_t vocab_offset, Communicator* tp,
                                            bool sequence_parallel, Tensor* d_table) {
  Tensor d_full;
  MF_RETURN_IF_ERROR(TpGather(d_out, tp, sequence_parallel, &d_full));
  if (d_table->dim(0) == 0) return absl::OkStatus();
  Tensor local;
  const std::vector<bool> mine = LocalIds(ids, vocab_offset, d_table->dim(0), &local);
  Tensor masked = d_full.Clone();
  ZeroRows(mine, &masked);
  ops::EmbeddingBackward(local, masked, d_table, CpuStream());
  return absl::OkStatus();
}

absl::StatusOr<Tensor> GatherTpShards(const Parameter& param, Communicator* tp, bool grad) {
  const Tensor& mine = grad ? param.grad : param.value;
  const Sharding& sh = param.sharding;
  if (sh.tp_dim < 0 || sh.tp_size == 1) return mine.Clone();
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

absl::Status VocabParallelCrossEntropyForward(const Tensor& logits, const Tensor& targets,
                                              int64_t vocab_offset, Communicator& tp,
                                              Tensor* token_losses, Tensor* lse) {
  const int64_t n = logits.dim(0), v = logits.dim(1);
  MF_CHECK(targets.numel() == n && token_losses->numel() == n && lse->numel() == n)
      << "vocab-parallel cross entropy: " << logits.DebugString() << " with targets "
      << targets.DebugString();
  const float* l = logits.data<float>();
  const int32_t* t = targets.data<int32_t>();
  // Global max per token (for stability), then Σexp and the target logit, each reduced over TP.
  Tensor max = Tensor::Empty({n}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) {
    float m = -INFINITY;
    for (int64_t j = 0; j < v; ++j) m = std::max(m, l[i * v + j]);
    max.data<float>()[i] = m;
  }
  MF_RETURN_IF_ERROR(WaitFor(tp.AllReduce(&max, {.op = ReduceOp::kMax})));
  Tensor sums = Tensor::Zeros({2, n}, DType::kF32);  // row 0: Σexp(l − max); row 1: target logit
  float* sum_exp = sums.data<float>();
  float* target_logit = sum_exp + n;
  for (int64_t i = 0; i < n; ++i) {
    const float m = max.data<float>()[i];
    double s = 0;
    for (int64_t j = 0; j < v; ++j) s += std::exp(static_cast<double>(l[i * v + j]) - m);
    sum_exp[i] = static_cast<float>(s);
    const int64_t local = static_cast<int64_t>(t[i]) - vocab_offset;
    if (t[i] >= 0 && local >= 0 && local < v) target_logit[i] = l[i * v + local];
  }
  MF_RETURN_IF_ERROR(WaitFor(tp.AllReduce(&sums, {})));
  for (int64_t i = 0; i < n; ++i) {
    const float lse_i = max.data<float>()[i] + std::log(sum_exp[i]);
    lse->data<float>()[i] = lse_i;
    token_losses->data<float>()[i] = t[i] < 0 ? 0.0f : lse_i - target_logit[i];
  }
  return absl::OkStatus();
}

void VocabParallelCrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                       int64_t vocab_offset, const Tensor& lse,
                                       const Tensor& d_token_losses, Tensor* d_logits) {
  const int64_t n = logits.dim(0), v = logits.dim(1);
  const float* l = logits.data<float>();
  const int32_t* t = targets.data<int32_t>();
  float* d = d_logits->data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const float g = t[i] < 0 ? 0.0f : d_token_losses.data<float>()[i];
    const float lse_i = lse.data<float>()[i];
    for (int64_t j = 0; j < v; ++j) d[i * v + j] = g * std::exp(l[i * v + j] - lse_i);
    const int64_t local = static_cast<int64_t>(t[i]) - vocab_offset;
    if (t[i] >= 0 && local >= 0 && local < v) d[i * v + local] -= g;
  }
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
