// CPU emulation of bf16 activations (docs/ARCHITECTURE.md §2; internal to ops/cpu). An op called
// with bf16 tensors runs its f32 reference on widened copies and rounds each bf16 output back
// (RNE): what the CUDA kernels do, f32 math on bf16 storage. So a bf16 model runs, and is tested,
// on the CPU, and the dtype rules each op checks here are the CUDA launchers' rules
// (ops/cuda/launchers.h).
//
//   if (internal::AnyBf16({&x, &w, y})) {
//     internal::Bf16Emulation emu("RmsNormForward");
//     emu.SameDType({&x, &w, y}, {"x", "w", "y"});
//     RmsNormForward(emu.In(x), emu.In(w), eps, emu.Out(y), rstd, stream);
//     emu.RoundBack();
//     return;
//   }
#pragma once

#include <deque>
#include <initializer_list>
#include <utility>

#include "core/tensor.h"

namespace moefold::ops::internal {

// Whether any of the (non-null) tensors is bf16.
bool AnyBf16(std::initializer_list<const Tensor*> tensors);

class Bf16Emulation {
 public:
  explicit Bf16Emulation(const char* op) : op_(op) {}
  Bf16Emulation(const Bf16Emulation&) = delete;
  Bf16Emulation& operator=(const Bf16Emulation&) = delete;

  // The tensors (null ones skipped) share one dtype, f32 or bf16 (CUDA's "activation" rule).
  void SameDType(std::initializer_list<const Tensor*> tensors,
                 std::initializer_list<const char*> names) const;
  // `t` (if non-null) is f32: statistics, routing weights, accumulated parameter gradients.
  void IsF32(const Tensor* t, const char* name) const;

  // An f32 view of an input: itself when f32, else a widened copy.
  Tensor In(const Tensor& t);
  // An f32 stand-in for an output (null stays null): itself when f32, else a widened copy of its
  // current contents (so accumulating outputs keep them), rounded back by RoundBack().
  Tensor* Out(Tensor* t);
  // Writes every stand-in back into its bf16 output, in the order Out() was called.
  void RoundBack();

 private:
  const char* op_;
  std::deque<std::pair<Tensor*, Tensor>>
      outs_;  // (bf16 output, its f32 stand-in); stable addresses
};

}  // namespace moefold::ops::internal
