// CPU reference of SwiGLU: out = silu(gate) · up, silu(g) = g · σ(g).
// σ is written as 1/(1 + e^(−g)): exp overflow for very negative g gives σ = 0, which is the limit.
#include "ops/activation.h"

#include <cmath>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

void CheckPair(const Tensor& gate, const Tensor& up, const char* op) {
  internal::CheckF32(gate, op, "gate");
  internal::CheckRank(gate, 2, op, "gate");
  internal::CheckF32(up, op, "up");
  internal::CheckShape(up, gate.shape(), op, "up");
}

}  // namespace

void SwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out, Stream& stream) {
  MF_RETURN_IF_GPU(gate, "SwiGluForward", cuda::SwiGluForward(gate, up, out, stream));
  if (internal::AnyBf16({&gate, &up, out})) {
    internal::Bf16Emulation emu("SwiGluForward");
    emu.SameDType({&gate, &up, out}, {"gate", "up", "out"});
    SwiGluForward(emu.In(gate), emu.In(up), emu.Out(out), stream);
    emu.RoundBack();
    return;
  }
  CheckPair(gate, up, "SwiGluForward");
  internal::CheckF32Out(out, gate.shape(), "SwiGluForward", "out");
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out->data<float>();
  for (int64_t i = 0; i < gate.numel(); ++i) o[i] = g[i] * Sigmoid(g[i]) * u[i];
}

// d_up = d_out · silu(g);  d_gate = d_out · up · σ(g) · (1 + g · (1 − σ(g))).
void SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& d_out, Tensor* d_gate,
                    Tensor* d_up, Stream& stream) {
  MF_RETURN_IF_GPU(gate, "SwiGluBackward",
                   cuda::SwiGluBackward(gate, up, d_out, d_gate, d_up, stream));
  if (internal::AnyBf16({&gate, &up, &d_out, d_gate, d_up})) {
    internal::Bf16Emulation emu("SwiGluBackward");
    emu.SameDType({&gate, &up, &d_out, d_gate, d_up}, {"gate", "up", "d_out", "d_gate", "d_up"});
    SwiGluBackward(emu.In(gate), emu.In(up), emu.In(d_out), emu.Out(d_gate), emu.Out(d_up), stream);
    emu.RoundBack();
    return;
  }
  CheckPair(gate, up, "SwiGluBackward");
  internal::CheckF32(d_out, "SwiGluBackward", "d_out");
  internal::CheckShape(d_out, gate.shape(), "SwiGluBackward", "d_out");
  internal::CheckF32Out(d_gate, gate.shape(), "SwiGluBackward", "d_gate");
  internal::CheckF32Out(d_up, gate.shape(), "SwiGluBackward", "d_up");
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  const float* d = d_out.data<float>();
  float* dg = d_gate->data<float>();
  float* du = d_up->data<float>();
  for (int64_t i = 0; i < gate.numel(); ++i) {
    const float s = Sigmoid(g[i]);
    const float grad = d[i];  // read first: d_out may alias d_gate or d_up
    du[i] = grad * g[i] * s;
    dg[i] = grad * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}

}  // namespace moefold::ops
