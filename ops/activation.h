// SwiGLU: out = silu(gate) · up, silu(x) = x · sigmoid(x).
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): all tensors f32 or bf16 (one dtype),
// f32 math, each output rounded once.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// gate_up (T, 2F) holds gate in columns [0, F) and up in [F, 2F) (one GEMM makes both);
// out (T, F) = silu(gate) · up.
void SwiGluForward(const Tensor& gate_up, Tensor* out, Stream& stream);
// d_up = d_out · silu(gate), d_gate = d_out · up · σ(gate) · (1 + gate · (1 − σ(gate))), with
// d_out (T, F); d_gate_up (T, 2F) overwritten with d_gate in columns [0, F) and d_up in [F, 2F).
// d_gate_up may alias gate_up (in place: each element is read before it is written).
void SwiGluBackward(const Tensor& gate_up, const Tensor& d_out, Tensor* d_gate_up, Stream& stream);

}  // namespace moefold::ops
