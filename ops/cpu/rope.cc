// CPU reference of rotary position embedding, Hugging Face "rotate_half" layout: element i < D/2
// pairs with i + D/2 and the pair rotates by pos · theta^(-2i/D). Angles are computed in f64
// because pos · inv_freq loses several bits in f32 at long positions.
#include "ops/rope.h"

#include <cmath>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

// Rotates every (i, i + D/2) pair of src by `sign` · angle into dst (src may equal dst).
void Rotate(const Tensor& src, const Tensor& positions, float theta, int sign, Tensor* dst,
            const char* op) {
  if (internal::AnyBf16({&src, dst})) {
    internal::Bf16Emulation emu(op);
    emu.SameDType({&src, dst}, {"input", "output"});
    Rotate(emu.In(src), positions, theta, sign, emu.Out(dst), op);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(src, op, "input");
  internal::CheckRank(src, 3, op, "input");
  const int64_t tokens = src.dim(0), heads = src.dim(1), dim = src.dim(2);
  MF_CHECK(dim % 2 == 0) << op << ": head dim D must be even, got " << src.DebugString();
  MF_CHECK(theta > 0.0f) << op << ": theta must be positive, got " << theta;
  internal::CheckI32(positions, op, "positions");
  internal::CheckShape(positions, {tokens}, op, "positions");
  internal::CheckF32Out(dst, src.shape(), op, "output");
  const int64_t half = dim / 2;
  const int32_t* pos = positions.data<int32_t>();
  const float* in = src.data<float>();
  float* out = dst->data<float>();
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = std::pow(static_cast<double>(theta), -2.0 * i / dim);
      const double angle = static_cast<double>(pos[t]) * inv_freq;
      const float c = static_cast<float>(std::cos(angle));
      const float s = static_cast<float>(sign * std::sin(angle));
      for (int64_t n = 0; n < heads; ++n) {
        const int64_t base = (t * heads + n) * dim;
        const float x1 = in[base + i], x2 = in[base + i + half];
        out[base + i] = x1 * c - x2 * s;
        out[base + i + half] = x2 * c + x1 * s;
      }
    }
  }
}

}  // namespace

void RopeForward(const Tensor& x, const Tensor& positions, float theta, Tensor* y, Stream& stream) {
  MF_RETURN_IF_GPU(x, "RopeForward", cuda::RopeForward(x, positions, theta, y, stream));
  Rotate(x, positions, theta, +1, y, "RopeForward");
}

// The rotation is orthogonal, so its transpose (the gradient map) is the rotation by −angle.
void RopeBackward(const Tensor& d_y, const Tensor& positions, float theta, Tensor* d_x,
                  Stream& stream) {
  MF_RETURN_IF_GPU(d_y, "RopeBackward", cuda::RopeBackward(d_y, positions, theta, d_x, stream));
  Rotate(d_y, positions, theta, -1, d_x, "RopeBackward");
}

}  // namespace moefold::ops
