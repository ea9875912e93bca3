// CPU reference of per-token cross entropy: loss = logsumexp(logits) − logits[target], computed
// with the row max subtracted so large logits cannot overflow. Target −1 means "ignore": loss 0, no
// grad. Also the same over a vocabulary split into shards (per-shard partials and their merge), the
// per-sample sums of the token losses and the sum of the per-sample means.
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

// Targets of a vocabulary shard: global ids, so only "−1 or a valid id" can be checked here (ids
// above the shard belong to other shards).
void CheckShardTargets(const Tensor& logits, const Tensor& targets, const char* op) {
  internal::CheckF32(logits, op, "logits");
  internal::CheckRank(logits, 2, op, "logits");
  internal::CheckI32(targets, op, "targets");
  internal::CheckShape(targets, {logits.dim(0)}, op, "targets");
  const int32_t* t = targets.data<int32_t>();
  for (int64_t n = 0; n < targets.numel(); ++n) {
    MF_CHECK(t[n] >= kIgnoreTarget)
        << op << ": target " << t[n] << " at row " << n << " is negative (-1 = ignore)";
  }
}

// d_logits[n][v] = g_n · (exp(l[n][v] − lse_n) − [v = target_n − first_id]), zero rows for ignored
// targets: the backward of the whole vocabulary (first_id 0) and of a shard. Arguments checked.
void BackwardRows(const Tensor& logits, const Tensor& targets, int64_t first_id, const Tensor& lse,
                  const Tensor& d_token_losses, Tensor* d_logits) {
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  for (int64_t n = 0; n < rows; ++n) {
    const float* l = logits.data<float>() + n * vocab;
    float* dl = d_logits->data<float>() + n * vocab;
    const int32_t target = targets.data<int32_t>()[n];
    if (target == kIgnoreTarget) {
      std::fill(dl, dl + vocab, 0.0f);
      continue;
    }
    const int64_t local = static_cast<int64_t>(target) - first_id;
    const double g = d_token_losses.data<float>()[n];
    const double row_lse = lse.data<float>()[n];
    for (int64_t v = 0; v < vocab; ++v) {
      const double p = std::exp(l[v] - row_lse);
      dl[v] = static_cast<float>(g * (p - (v == local ? 1.0 : 0.0)));
    }
  }
}

void CheckBackwardInputs(const Tensor& logits, const Tensor& lse, const Tensor& d_token_losses,
                         Tensor* d_logits, const char* op) {
  const int64_t rows = logits.dim(0);
  internal::CheckF32(lse, op, "lse");
  internal::CheckShape(lse, {rows}, op, "lse");
  internal::CheckF32(d_token_losses, op, "d_token_losses");
  internal::CheckShape(d_token_losses, {rows}, op, "d_token_losses");
  internal::CheckF32Out(d_logits, logits.shape(), op, "d_logits");
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
  CheckBackwardInputs(logits, lse, d_token_losses, d_logits, "CrossEntropyBackward");
  BackwardRows(logits, targets, 0, lse, d_token_losses, d_logits);
}

void CrossEntropyShardPartials(const Tensor& logits, const Tensor& targets, int64_t first_id,
                               Tensor* partials, Stream& stream) {
  constexpr const char* kOp = "CrossEntropyShardPartials";
  MF_RETURN_IF_GPU(logits, kOp,
                   cuda::CrossEntropyShardPartials(logits, targets, first_id, partials, stream));
  if (internal::AnyBf16({&logits})) {
    internal::Bf16Emulation emu(kOp);
    emu.IsF32(partials, "partials");
    CrossEntropyShardPartials(emu.In(logits), targets, first_id, partials, stream);
    return;
  }
  CheckShardTargets(logits, targets, kOp);
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  internal::CheckF32Out(partials, {3, rows}, kOp, "partials");
  float* row_max = partials->data<float>();
  float* sum_exp = row_max + rows;
  float* target_logit = sum_exp + rows;
  for (int64_t n = 0; n < rows; ++n) {
    const float* l = logits.data<float>() + n * vocab;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t v = 0; v < vocab; ++v) m = std::max(m, static_cast<double>(l[v]));
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(l[v] - m);
    const int32_t target = targets.data<int32_t>()[n];
    const int64_t local = static_cast<int64_t>(target) - first_id;
    row_max[n] = static_cast<float>(m);
    sum_exp[n] = static_cast<float>(sum);
    target_logit[n] = target != kIgnoreTarget && local >= 0 && local < vocab ? l[local] : 0.0f;
  }
}

void CrossEntropyFromShardPartials(const Tensor& partials, const Tensor& targets,
                                   Tensor* token_losses, Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "CrossEntropyFromShardPartials";
  MF_RETURN_IF_GPU(
      partials, kOp,
      cuda::CrossEntropyFromShardPartials(partials, targets, token_losses, lse, stream));
  internal::CheckF32(partials, kOp, "partials");
  internal::CheckRank(partials, 3, kOp, "partials");
  MF_CHECK_EQ(partials.dim(1), 3) << kOp << ": partials must be (R, 3, N), got "
                                  << partials.DebugString();
  const int64_t shards = partials.dim(0), rows = partials.dim(2);
  internal::CheckI32(targets, kOp, "targets");
  internal::CheckShape(targets, {rows}, kOp, "targets");
  internal::CheckF32Out(token_losses, {rows}, kOp, "token_losses");
  internal::CheckF32Out(lse, {rows}, kOp, "lse");
  const float* p = partials.data<float>();
  // Partial k of shard r for row n.
  auto at = [&](int64_t r, int64_t k, int64_t n) -> double { return p[(r * 3 + k) * rows + n]; };
  for (int64_t n = 0; n < rows; ++n) {
    const int32_t target = targets.data<int32_t>()[n];
    MF_CHECK(target >= kIgnoreTarget)
        << kOp << ": target " << target << " at row " << n << " is negative (-1 = ignore)";
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t r = 0; r < shards; ++r) m = std::max(m, at(r, 0, n));
    double sum = 0, target_logit = 0;
    for (int64_t r = 0; r < shards; ++r) {
      // A shard without columns has max −inf and adds nothing (exp(−inf − m) would be NaN when
      // every shard were empty).
      if (at(r, 0, n) != -std::numeric_limits<double>::infinity()) {
        sum += at(r, 1, n) * std::exp(at(r, 0, n) - m);
      }
      target_logit += at(r, 2, n);
    }
    const double row_lse = m + std::log(sum);
    lse->data<float>()[n] = static_cast<float>(row_lse);
    token_losses->data<float>()[n] =
        target == kIgnoreTarget ? 0.0f : static_cast<float>(row_lse - target_logit);
  }
}

void CrossEntropyShardBackward(const Tensor& logits, const Tensor& targets, int64_t first_id,
                               const Tensor& lse, const Tensor& d_token_losses, Tensor* d_logits,
                               Stream& stream) {
  constexpr const char* kOp = "CrossEntropyShardBackward";
  MF_RETURN_IF_GPU(logits, kOp,
                   cuda::CrossEntropyShardBackward(logits, targets, first_id, lse, d_token_losses,
                                                   d_logits, stream));
  if (internal::AnyBf16({&logits, d_logits})) {  // d_logits may alias logits: In() copies first
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&logits, d_logits}, {"logits", "d_logits"});
    CrossEntropyShardBackward(emu.In(logits), targets, first_id, lse, d_token_losses,
                              emu.Out(d_logits), stream);
    emu.RoundBack();
    return;
  }
  CheckShardTargets(logits, targets, kOp);
  CheckBackwardInputs(logits, lse, d_token_losses, d_logits, kOp);
  BackwardRows(logits, targets, first_id, lse, d_token_losses, d_logits);
}

void SampleLossSums(const Tensor& token_losses, const Tensor& targets, Tensor* sums,
                    Stream& stream) {
  constexpr const char* kOp = "SampleLossSums";
  // Shapes are host values: checked here, for both devices.
  MF_CHECK(sums != nullptr) << kOp << ": output sums is null";
  internal::CheckRank(token_losses, 1, kOp, "token_losses");
  internal::CheckRank(*sums, 2, kOp, "sums");
  MF_CHECK_EQ(sums->dim(0), 2) << kOp << ": sums must be (2, B), got " << sums->DebugString();
  const int64_t samples = sums->dim(1), n = token_losses.numel();
  MF_CHECK(samples > 0 ? n % samples == 0 : n == 0)
      << kOp << ": " << n << " token losses do not split into B=" << samples << " samples";
  const int64_t seq = samples > 0 ? n / samples : 0;
  MF_CHECK(targets.shape() == Shape{n} || targets.shape() == Shape({samples, seq}))
      << kOp << ": targets must be (B·S) or (B, S) = (" << samples << ", " << seq << "), got "
      << targets.DebugString();
  MF_RETURN_IF_GPU(token_losses, kOp, cuda::SampleLossSums(token_losses, targets, sums, stream));
  internal::CheckF32(token_losses, kOp, "token_losses");
  internal::CheckI32(targets, kOp, "targets");
  internal::CheckF32(*sums, kOp, "sums");
  const float* loss = token_losses.data<float>();
  const int32_t* target = targets.data<int32_t>();
  float* out = sums->data<float>();
  for (int64_t b = 0; b < samples; ++b) {
    double sum = 0;  // more accurate than the GPU's f32 block sum it checks
    int64_t count = 0;
    for (int64_t s = 0; s < seq; ++s) {
      if (target[b * seq + s] == kIgnoreTarget) continue;
      sum += loss[b * seq + s];
      ++count;
    }
    out[b] = static_cast<float>(sum);
    out[samples + b] = static_cast<float>(count);
  }
}

void AccumulateSampleMeans(const Tensor& sums, Tensor* total, Stream& stream) {
  MF_RETURN_IF_GPU(sums, "AccumulateSampleMeans", cuda::AccumulateSampleMeans(sums, total, stream));
  constexpr const char* kOp = "AccumulateSampleMeans";
  internal::CheckF32(sums, kOp, "sums");
  internal::CheckRank(sums, 2, kOp, "sums");
  MF_CHECK_EQ(sums.dim(0), 2) << kOp << ": sums must be (2, B), got " << sums.DebugString();
  internal::CheckF32Out(total, {1}, kOp, "total");
  const int64_t samples = sums.dim(1);
  const float* s = sums.data<float>();
  // f32 in b order, the same operations as the GPU's one thread: bit-identical results.
  float mean_sum = 0.0f;
  for (int64_t b = 0; b < samples; ++b) {
    const float count = s[samples + b];
    mean_sum += count > 0.0f ? s[b] / count : 0.0f;
  }
  total->data<float>()[0] += mean_sum;
}

}  // namespace moefold::ops
