// CPU reference of per-token cross entropy: loss = logsumexp(logits) − logits[target], computed
// with the row max subtracted so large logits cannot overflow. Target −1 means "ignore": loss 0, no
// grad.
#include "ops/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

constexpr int32_t kIgnoreTarget = -1;

void CheckTargets(const Tensor& logits, const Tensor& targets, const char* op) {
  internal::CheckF32(logits, op, "logits");
  internal::CheckRank(logits, 2, op, "logits");
  internal::CheckI32(targets, op, "targets");
  internal::CheckShape(targets, {logits.dim(0)}, op, "targets");
  const int64_t vocab = logits.dim(1);
  const int32_t* t = targets.data<int32_t>();
  for (int64_t n = 0; n < targets.numel(); ++n) {
    MF_CHECK(t[n] == kIgnoreTarget || (t[n] >= 0 && t[n] < vocab))
        << op << ": target " << t[n] << " at row " << n << " is out of range [0, V=" << vocab
        << ") (-1 = ignore)";
  }
}

}  // namespace

void CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor* token_losses,
                         Tensor* lse, Stream& stream) {
  MF_RETURN_IF_GPU(logits, "CrossEntropyForward",
                   cuda::CrossEntropyForward(logits, targets, token_losses, lse, stream));
  if (internal::AnyBf16({&logits})) {
    internal::Bf16Emulation emu("CrossEntropyForward");
    emu.IsF32(token_losses, "token_losses");
    emu.IsF32(lse, "lse");
    CrossEntropyForward(emu.In(logits), targets, token_losses, lse, stream);
    return;
  }
  CheckTargets(logits, targets, "CrossEntropyForward");
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  internal::CheckF32Out(token_losses, {rows}, "CrossEntropyForward", "token_losses");
  internal::CheckF32Out(lse, {rows}, "CrossEntropyForward", "lse");
  for (int64_t n = 0; n < rows; ++n) {
    const float* l = logits.data<float>() + n * vocab;
    double max_l = -std::numeric_limits<double>::infinity();
    for (int64_t v = 0; v < vocab; ++v) max_l = std::max(max_l, static_cast<double>(l[v]));
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(l[v] - max_l);
    const double row_lse = max_l + std::log(sum);
    const int32_t target = targets.data<int32_t>()[n];
    lse->data<float>()[n] = static_cast<float>(row_lse);
    token_losses->data<float>()[n] =
        target == kIgnoreTarget ? 0.0f : static_cast<float>(row_lse - l[target]);
  }
}

void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                          const Tensor& d_token_losses, Tensor* d_logits, Stream& stream) {
  MF_RETURN_IF_GPU(
      logits, "CrossEntropyBackward",
      cuda::CrossEntropyBackward(logits, targets, lse, d_token_losses, d_logits, stream));
  if (internal::AnyBf16({&logits, d_logits})) {  // d_logits may alias logits: In() copies first
    internal::Bf16Emulation emu("CrossEntropyBackward");
    emu.SameDType({&logits, d_logits}, {"logits", "d_logits"});
    CrossEntropyBackward(emu.In(logits), targets, lse, d_token_losses, emu.Out(d_logits), stream);
    emu.RoundBack();
    return;
  }
  CheckTargets(logits, targets, "CrossEntropyBackward");
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  internal::CheckF32(lse, "CrossEntropyBackward", "lse");
  internal::CheckShape(lse, {rows}, "CrossEntropyBackward", "lse");
  internal::CheckF32(d_token_losses, "CrossEntropyBackward", "d_token_losses");
  internal::CheckShape(d_token_losses, {rows}, "CrossEntropyBackward", "d_token_losses");
  internal::CheckF32Out(d_logits, logits.shape(), "CrossEntropyBackward", "d_logits");
  for (int64_t n = 0; n < rows; ++n) {
    const float* l = logits.data<float>() + n * vocab;
    float* dl = d_logits->data<float>() + n * vocab;
    const int32_t target = targets.data<int32_t>()[n];
    if (target == kIgnoreTarget) {
      std::fill(dl, dl + vocab, 0.0f);
      continue;
    }
    const double g = d_token_losses.data<float>()[n];
    const double row_lse = lse.data<float>()[n];
    for (int64_t v = 0; v < vocab; ++v) {
      const double p = std::exp(l[v] - row_lse);
      dl[v] = static_cast<float>(g * (p - (v == target ? 1.0 : 0.0)));
    }
  }
}

}  // namespace moefold::ops
