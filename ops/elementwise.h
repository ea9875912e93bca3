// Small element-wise ops the layers need between the big ones (residual adds, scaling).
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): f32 or bf16, f32 math.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// out = a + b (same shape, f32). out may alias a or b.
void Add(const Tensor& a, const Tensor& b, Tensor* out, Stream& stream);
// x *= alpha (f32).
void Scale(float alpha, Tensor* x, Stream& stream);

}  // namespace moefold::ops
