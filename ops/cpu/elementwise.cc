// CPU reference of the small element-wise ops (residual add, scale) on f32 tensors.
// Outputs may alias inputs: each element is read before it is written.
#include "ops/elementwise.h"

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {

void Add(const Tensor& a, const Tensor& b, Tensor* out, Stream& stream) {
  MF_RETURN_IF_GPU(a, "Add", cuda::Add(a, b, out, stream));
  MF_CHECK(out != nullptr) << "Add: output out is null";
  if (internal::AnyBf16({&a, &b, out})) {
    internal::Bf16Emulation emu("Add");
    emu.SameDType({&a, &b, out}, {"a", "b", "out"});
    Add(emu.In(a), emu.In(b), emu.Out(out), stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(a, "Add", "a");
  internal::CheckF32(b, "Add", "b");
  internal::CheckShape(b, a.shape(), "Add", "b");
  internal::CheckF32Out(out, a.shape(), "Add", "out");
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out->data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) po[i] = pa[i] + pb[i];
}

void Scale(float alpha, Tensor* x, Stream& stream) {
  MF_CHECK(x != nullptr) << "Scale: x is null";
  MF_RETURN_IF_GPU(*x, "Scale", cuda::Scale(alpha, x, stream));
  if (internal::AnyBf16({x})) {
    internal::Bf16Emulation emu("Scale");
    Scale(alpha, emu.Out(x), stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(*x, "Scale", "x");
  float* p = x->data<float>();
  for (int64_t i = 0; i < x->numel(); ++i) p[i] *= alpha;
}

}  // namespace moefold::ops
