// CPU reference of SwiGLU: out = silu(gate) · up, silu(g) = g · σ(g), on the fused (T, 2F) gate_up
// tensor (gate columns first, then up).
// σ is written as 1/(1 + e^(−g)): exp overflow for very negative g gives σ = 0, which is the limit.
#include "ops/activation.h"

#include <cmath>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

inline float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// gate_up (T, 2F) f32; returns F.
int64_t CheckGateUp(const Tensor& gate_up, const char* op) {
  internal::CheckF32(gate_up, op, "gate_up");
  internal::CheckRank(gate_up, 2, op, "gate_up");
  MF_CHECK(gate_up.dim(1) % 2 == 0)
      << op << ": gate_up must have an even number of columns (gate | up), got "
      << gate_up.DebugString();
  return gate_up.dim(1) / 2;
}

}  // namespace

void SwiGluForward(const Tensor& gate_up, Tensor* out, Stream& stream) {
  MF_RETURN_IF_GPU(gate_up, "SwiGluForward", cuda::SwiGluForward(gate_up, out, stream));
  if (internal::AnyBf16({&gate_up, out})) {
    internal::Bf16Emulation emu("SwiGluForward");
    emu.SameDType({&gate_up, out}, {"gate_up", "out"});
    SwiGluForward(emu.In(gate_up), emu.Out(out), stream);
    emu.RoundBack();
    return;
  }
  const int64_t f = CheckGateUp(gate_up, "SwiGluForward");
  const int64_t rows = gate_up.dim(0);
  internal::CheckF32Out(out, {rows, f}, "SwiGluForward", "out");
  for (int64_t t = 0; t < rows; ++t) {
    const float* g = gate_up.data<float>() + t * 2 * f;
    const float* u = g + f;
    float* o = out->data<float>() + t * f;
    for (int64_t i = 0; i < f; ++i) o[i] = g[i] * Sigmoid(g[i]) * u[i];
  }
}

// d_up = d_out · silu(g);  d_gate = d_out · up · σ(g) · (1 + g · (1 − σ(g))).
void SwiGluBackward(const Tensor& gate_up, const Tensor& d_out, Tensor* d_gate_up, Stream& stream) {
  MF_RETURN_IF_GPU(gate_up, "SwiGluBackward",
                   cuda::SwiGluBackward(gate_up, d_out, d_gate_up, stream));
  if (internal::AnyBf16({&gate_up, &d_out, d_gate_up})) {
    internal::Bf16Emulation emu("SwiGluBackward");
    emu.SameDType({&gate_up, &d_out, d_gate_up}, {"gate_up", "d_out", "d_gate_up"});
    SwiGluBackward(emu.In(gate_up), emu.In(d_out), emu.Out(d_gate_up), stream);
    emu.RoundBack();
    return;
  }
  const int64_t f = CheckGateUp(gate_up, "SwiGluBackward");
  const int64_t rows = gate_up.dim(0);
  internal::CheckF32(d_out, "SwiGluBackward", "d_out");
  internal::CheckShape(d_out, {rows, f}, "SwiGluBackward", "d_out");
  internal::CheckF32Out(d_gate_up, gate_up.shape(), "SwiGluBackward", "d_gate_up");
  for (int64_t t = 0; t < rows; ++t) {
    const float* g = gate_up.data<float>() + t * 2 * f;
    const float* u = g + f;
    const float* d = d_out.data<float>() + t * f;
    float* dg = d_gate_up->data<float>() + t * 2 * f;
    float* du = dg + f;
    for (int64_t i = 0; i < f; ++i) {
      // Read both halves first: d_gate_up may alias gate_up.
      const float gi = g[i], ui = u[i], s = Sigmoid(gi);
      du[i] = d[i] * gi * s;
      dg[i] = d[i] * ui * s * (1.0f + gi * (1.0f - s));
    }
  }
}

}  // namespace moefold::ops
