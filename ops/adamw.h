// AdamW over flat f32 buffers, as PyTorch's torch.optim.AdamW (decoupled decay, applied first):
//   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
//   p -= lr · (m/(1-β1^t)) / (sqrt(v/(1-β2^t)) + eps) + lr · wd · p
// GPU: one fused pass over the four f32 buffers. The flat step also scales the gradient by a
// device scalar (the deferred normaliser times the clip factor, which the trainer computes from
// the norm it reads anyway and uploads), skips the decay on ranges (norms) and writes the bf16
// compute copy, so an optimizer update is one pass per flat buffer.
//
//   AdamWFlatStep(options, b.grads, scale, ranges, &b.values, &m, &v, &b.compute, stream);
#pragma once

#include <cstdint>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;  // 1-based step count for bias correction
};

// param, m, v updated in place; grad read. All f32 with the same element count.
void AdamWStep(const AdamWOptions& options, const Tensor& grad, Tensor* param, Tensor* m, Tensor* v,
               Stream& stream);

// AdamWStep on g = grad · grad_scale[0] (one f32 multiply per element) over a whole flat buffer:
// elements inside a no-decay range get weight decay 0, the others options.weight_decay. The result
// is bit-identical to AdamWStep on the scaled gradient, range by range, on the CPU.
//   grad, param, m, v (N) f32 (any shapes of N elements); param, m, v updated in place.
//   grad_scale (1) f32 on the same device (read there: no host wait).
//   no_decay_ranges (R, 2) i64 on the same device: [begin, end) element ranges, sorted, disjoint,
//     within [0, N]; R may be 0. The CPU checks them; the GPU trusts them (build them once on the
//     host, check there, upload).
//   compute (N) bf16, or null or undefined: when given, overwritten with the updated param rounded
//     to bf16 (RNE) in the same pass, so no separate conversion is needed.
void AdamWFlatStep(const AdamWOptions& options, const Tensor& grad, const Tensor& grad_scale,
                   const Tensor& no_decay_ranges, Tensor* param, Tensor* m, Tensor* v,
                   Tensor* compute, Stream& stream);

}  // namespace moefold::ops
