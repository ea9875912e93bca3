// Argument checks shared by the CPU reference ops (internal to ops/cpu; not a public header).
// Every op checks device, dtype and shape of each tensor argument up front, so a mistake fails
// with a message naming the op and the argument instead of reading out of bounds.
#pragma once

#include "core/status.h"
#include "core/tensor.h"
#include "ops/cuda/launchers.h"

// Dispatch by device (docs/ARCHITECTURE.md §3): `return call;` (the op's CUDA launcher,
// ops/cuda/launchers.h) when `t` lives on a GPU. Without the CUDA backend a GPU tensor cannot be
// made (AllocatorFor refuses), and should one arrive the op names itself; `call` is then never
// evaluated or linked.
#ifdef MOEFOLD_HAVE_CUDA
#define MF_RETURN_IF_GPU(t, op, call) \
  if ((t).device().is_cuda()) return call
#else
#define MF_RETURN_IF_GPU(t, op, call)                                                         \
  static_cast<void>(sizeof(decltype(call)*));                                                 \
  MF_CHECK(!(t).device().is_cuda()) << op << ": " << (t).DebugString()                        \
                                    << " is on a GPU but moefold was built without the CUDA " \
                                       "backend"
#endif

namespace moefold::ops::internal {

// The tensor lives on the host: the CPU reference cannot read device memory.
inline void CheckCpu(const Tensor& t, const char* op, const char* name) {
  MF_CHECK(t.device().is_cpu())
      << op << ": " << name << " requires a CPU tensor (CUDA backend not built for this op); got "
      << t.DebugString();
}

inline void CheckDType(const Tensor& t, DType dtype, const char* op, const char* name) {
  MF_CHECK(t.dtype() == dtype) << op << ": " << name << " must be " << DTypeName(dtype) << ", got "
                               << t.DebugString();
}

inline void CheckShape(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  MF_CHECK(t.shape() == shape) << op << ": " << name << " must have shape " << ShapeToString(shape)
                               << ", got " << t.DebugString();
}

inline void CheckRank(const Tensor& t, int rank, const char* op, const char* name) {
  MF_CHECK_EQ(t.rank(), rank) << op << ": " << name << " " << t.DebugString();
}

// A defined CPU f32 tensor, the common case.
inline void CheckF32(const Tensor& t, const char* op, const char* name) {
  CheckCpu(t, op, name);
  CheckDType(t, DType::kF32, op, name);
}

inline void CheckI32(const Tensor& t, const char* op, const char* name) {
  CheckCpu(t, op, name);
  CheckDType(t, DType::kI32, op, name);
}

// An output pointer is non-null and its tensor is a CPU f32 tensor of the given shape.
inline void CheckF32Out(const Tensor* t, const Shape& shape, const char* op, const char* name) {
  MF_CHECK(t != nullptr) << op << ": output " << name << " is null";
  CheckF32(*t, op, name);
  CheckShape(*t, shape, op, name);
}

}  // namespace moefold::ops::internal
