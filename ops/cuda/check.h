// Argument checks of the CUDA launchers (internal to ops/cuda): every tensor on the stream's GPU,
// activation dtypes f32 or bf16, shapes as the op documents, the alignment vector paths need.
// Messages name the op and argument.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops::cuda {

// The stream belongs to `device` (a GPU).
inline void CheckStream(const Stream& stream, const Device& device, const char* op) {
  MF_CHECK(stream.device() == device)
      << op << ": tensors on " << device.ToString() << " need a stream of that GPU, got a "
      << stream.device().ToString() << " stream";
}

// `t` lives on `device`.
inline void CheckOn(const Tensor& t, const Device& device, const char* op, const char* name) {
  MF_CHECK(t.device() == device) << op << ": " << name << " must be on " << device.ToString()
                                 << ", got " << t.DebugString();
}

inline void CheckDType(const Tensor& t, DType dtype, const char* op, const char* name) {
  MF_CHECK(t.dtype() == dtype) << op << ": " << name << " must be " << DTypeName(dtype) << ", got "
                               << t.DebugString();
}

// An activation tensor: f32 or bf16 on `device`.
inline void CheckActivation(const Tensor& t, const Device& device, const char* op,
                            const char* name) {
  CheckOn(t, device, op, name);
  MF_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16)
      << op << ": " << name << " must be f32 or bf16 on the GPU, got " << t.DebugString();
}

inline void CheckShape(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  MF_CHECK(t.shape() == shape) << op << ": " << name << " must have shape " << ShapeToString(shape)
                               << ", got " << t.DebugString();
}

inline void CheckRank(const Tensor& t, int rank, const char* op, const char* name) {
  MF_CHECK_EQ(t.rank(), rank) << op << ": " << name << " " << t.DebugString();
}

// Checks an input on `device` with `dtype` and `shape`.
inline void CheckIn(const Tensor& t, const Device& device, DType dtype, const Shape& shape,
                    const char* op, const char* name) {
  CheckOn(t, device, op, name);
  CheckDType(t, dtype, op, name);
  CheckShape(t, shape, op, name);
}

// Checks a non-null output on `device` with `dtype` and `shape`.
inline void CheckOut(const Tensor* t, const Device& device, DType dtype, const Shape& shape,
                     const char* op, const char* name) {
  MF_CHECK(t != nullptr) << op << ": output " << name << " is null";
  CheckIn(*t, device, dtype, shape, op, name);
}

// Whether `p` is a multiple of `bytes` (a power of two): views made by Slice may start anywhere.
inline bool IsAligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// A GPU temporary for work on `stream`: its memory is reused only after that work is done.
inline Tensor Scratch(const Shape& shape, DType dtype, const Stream& stream) {
  Tensor t = Tensor::Empty(shape, dtype, stream.device());
  t.RecordStream(stream);
  return t;
}

}  // namespace moefold::ops::cuda
