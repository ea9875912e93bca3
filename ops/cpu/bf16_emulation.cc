// bf16 emulation of the CPU reference ops: widen, compute in f32, round back.
#include "ops/cpu/bf16_emulation.h"

#include "core/status.h"

namespace moefold::ops::internal {

bool AnyBf16(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t != nullptr && t->dtype() == DType::kBF16) return true;
  }
  return false;
}

void Bf16Emulation::SameDType(std::initializer_list<const Tensor*> tensors,
                              std::initializer_list<const char*> names) const {
  MF_CHECK_EQ(tensors.size(), names.size()) << op_;
  const Tensor* first = nullptr;
  const char* first_name = "";
  auto name = names.begin();
  for (const Tensor* t : tensors) {
    const char* n = *name++;
    if (t == nullptr) continue;
    MF_CHECK(t->dtype() == DType::kF32 || t->dtype() == DType::kBF16)
        << op_ << ": " << n << " must be f32 or bf16, got " << t->DebugString();
    if (first == nullptr) {
      first = t;
      first_name = n;
      continue;
    }
    MF_CHECK(t->dtype() == first->dtype())
        << op_ << ": " << n << " " << t->DebugString() << " must have the dtype of " << first_name
        << " " << first->DebugString();
  }
}

void Bf16Emulation::IsF32(const Tensor* t, const char* name) const {
  MF_CHECK(t == nullptr || t->dtype() == DType::kF32)
      << op_ << ": " << name << " must be f32, got " << t->DebugString();
}

Tensor Bf16Emulation::In(const Tensor& t) {
  return t.dtype() == DType::kF32 ? t : t.To(DType::kF32);
}

Tensor* Bf16Emulation::Out(Tensor* t) {
  if (t == nullptr || t->dtype() == DType::kF32) return t;
  outs_.emplace_back(t, t->To(DType::kF32));
  return &outs_.back().second;
}

void Bf16Emulation::RoundBack() {
  for (auto& [target, wide] : outs_) target->ConvertFrom(wide, CpuStream());
  outs_.clear();
}

}  // namespace moefold::ops::internal
