// Rotary position embedding (Su et al. 2021) in the Hugging Face "rotate_half" layout used by
// Llama, Mixtral and Qwen2: for head dim D, element i < D/2 pairs with i + D/2 and rotates by angle
// = pos · theta^(-2i/D). Positions are global (context parallelism passes its chunk offsets). GPU
// and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): x, y f32 or bf16; angles in f64 as on
// the CPU.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// x (T, N, D) f32 (N heads, D even), positions (T) i32 -> y (T, N, D). y may alias x.
void RopeForward(const Tensor& x, const Tensor& positions, float theta, Tensor* y, Stream& stream);
// The inverse rotation applied to d_y. d_x may alias d_y.
void RopeBackward(const Tensor& d_y, const Tensor& positions, float theta, Tensor* d_x,
                  Stream& stream);

}  // namespace moefold::ops
