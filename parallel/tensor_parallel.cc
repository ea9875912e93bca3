// Column/row-parallel linears with sequence parallelism, and the vocabulary-parallel cross entropy.
#include "parallel/tensor_parallel.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "ops/gemm.h"

namespace moefold::parallel {

absl::Status ColumnParallelLinearForward(const Tensor& x, const Tensor& w, Communicator& tp,
                                         bool sequence_parallel, Tensor* x_full, Tensor* y) {
  if (sequence_parallel) {
    *x_full = Tensor::Empty({x.dim(0) * tp.size(), x.dim(1)}, DType::kF32);
    MF_RETURN_IF_ERROR(WaitFor(tp.AllGather(x, x_full, {})));
  } else {
    *x_full = x;
  }
  ops::LinearForward(*x_full, w, y, CpuStream());
  return absl::OkStatus();
}

absl::Status ColumnParallelLinearBackward(const Tensor& x_full, const Tensor& w, const Tensor& d_y,
                                          Communicator& tp, bool sequence_parallel, Tensor* d_x,
                                          Tensor* d_w) {
  // Each rank holds a slice of the outputs, so its d_x is a partial sum over that slice.
  Tensor partial = Tensor::Empty(x_full.shape(), DType::kF32);
  ops::LinearBackward(x_full, w, d_y, &partial, d_w, CpuStream());
  if (sequence_parallel) return WaitFor(tp.ReduceScatter(partial, d_x, {}));
  MF_RETURN_IF_ERROR(WaitFor(tp.AllReduce(&partial, {})));
  d_x->CopyFrom(partial);
  return absl::OkStatus();
}

absl::Status RowParallelLinearForward(const Tensor& x, const Tensor& w, Communicator& tp,
                                      bool sequence_parallel, Tensor* y) {
  Tensor partial = Tensor::Empty({x.dim(0), w.dim(0)}, DType::kF32);
  ops::LinearForward(x, w, &partial, CpuStream());
  if (sequence_parallel) return WaitFor(tp.ReduceScatter(partial, y, {}));
  MF_RETURN_IF_ERROR(WaitFor(tp.AllReduce(&partial, {})));
  y->CopyFrom(partial);
  return absl::OkStatus();
}

absl::Status RowParallelLinearBackward(const Tensor& x, const Tensor& w, const Tensor& d_y,
                                       Communicator& tp, bool sequence_parallel, Tensor* d_x,
                                       Tensor* d_w) {
  Tensor d_y_full = d_y;
  if (sequence_parallel) {
    d_y_full = Tensor::Empty({d_y.dim(0) * tp.size(), d_y.dim(1)}, DType::kF32);
    MF_RETURN_IF_ERROR(WaitFor(tp.AllGather(d_y, &d_y_full, {})));
  }
  ops::LinearBackward(x, w, d_y_full, d_x, d_w, CpuStream());
  return absl::OkStatus();
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

}  // namespace moefold::parallel
