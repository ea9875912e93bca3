// SwiGLU's per-element arithmetic (internal to ops/cuda), shared by the SwiGLU kernels
// (activation.cu) and the fused FP8 producers (fp8_fused.cu): one expression each, so both round
// (and contract) the same way. f32 with expf (not __expf) for f32 parity with the CPU.
#pragma once

namespace moefold::ops::cuda {

__device__ __forceinline__ float SwiGluSigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// silu(g)·u.
__device__ __forceinline__ float SwiGluValue(float g, float u) { return g * SwiGluSigmoid(g) * u; }

// d_gate = d·u·σ(g)·(1 + g·(1 − σ(g))), d_up = d·silu(g).
__device__ __forceinline__ void SwiGluGrads(float g, float u, float d, float* d_gate, float* d_up) {
  const float s = SwiGluSigmoid(g);
  *d_up = d * g * s;
  *d_gate = d * u * s * (1.0f + g * (1.0f - s));
}

}  // namespace moefold::ops::cuda
