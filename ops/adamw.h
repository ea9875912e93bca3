// AdamW (Loshchilov & Hutter 2019) over flat f32 buffers, as PyTorch's torch.optim.AdamW:
//   m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
//   p -= lr · (m/(1-β1^t)) / (sqrt(v/(1-β2^t)) + eps) + lr · wd · p   (decoupled decay, applied first)
// GPU: one fused pass over the four f32 buffers.
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

}  // namespace moefold::ops
