// Cross entropy per token; the model averages tokens per sample so reweighting sees per-sample
// losses. GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): logits and d_logits f32 or
// bf16 (d_logits may alias logits); losses and lse f32. The softmax is never stored: forward reads
// each row once, backward writes the gradient directly.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// logits (N, V) f32, targets (N) i32 with -1 = ignore (loss 0, no gradient), else 0 <= t < V.
// token_losses (N) f32 = logsumexp(logits) - logits[target]; lse (N) f32 saved for backward.
void CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor* token_losses,
                         Tensor* lse, Stream& stream);
// d_logits[n] = d_token_losses[n] · (softmax(logits[n]) - onehot(target)); overwritten.
void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                          const Tensor& d_token_losses, Tensor* d_logits, Stream& stream);

// Per-sample loss sums on the loss's device (no host copy). token_losses (B·S) f32; targets (B, S)
// or (B·S) i32, -1 = ignored; sums (2, B) f32 overwritten: sums[0][b] = Σ_s token_losses[b·S + s]
// over the tokens of sample b with a target, sums[1][b] = their count. B is sums' second dim.
void SampleLossSums(const Tensor& token_losses, const Tensor& targets, Tensor* sums,
                    Stream& stream);
// total (1) f32 += Σ_b (count_b > 0 ? sum_b / count_b : 0) for sums (2, B) from SampleLossSums:
// the sum of the per-sample mean losses, added in b order in f32 (identical on CPU and GPU), so a
// step can accumulate its loss over micro-batches on the device.
void AccumulateSampleMeans(const Tensor& sums, Tensor* total, Stream& stream);

}  // namespace moefold::ops
