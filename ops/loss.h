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

}  // namespace moefold::ops
