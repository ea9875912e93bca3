// SwiGLU (Shazeer 2020): out = silu(gate) · up, silu(x) = x · sigmoid(x).
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): all tensors f32 or bf16 (one dtype),
// f32 math.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// gate, up (T, F) f32 -> out (T, F) f32.
void SwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out, Stream& stream);
// d_gate, d_up overwritten.
void SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& d_out, Tensor* d_gate,
                    Tensor* d_up, Stream& stream);

}  // namespace moefold::ops
