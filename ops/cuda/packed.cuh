// 16-byte packed access for the RoPE, router-logits and AdamW kernels (internal to ops/cuda): kVec
// elements of T (kVec · sizeof(T) = 16, or kVec = 1 for the scalar fallback) loaded as f32 and
// stored from f32 with one rounding each. The caller guarantees 16-byte alignment for kVec > 1
// (checked once per launch on the host with IsAligned16).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

#include "core/tensor.h"
#include "ops/cuda/common.cuh"

namespace moefold::ops::cuda {

// Elements of T in one 16-byte access: 4 f32 or 8 bf16.
template <typename T>
inline constexpr int kPack = 16 / static_cast<int>(sizeof(T));

template <typename T, int kVec>
__device__ __forceinline__ void LoadPacked(const T* p, float (&out)[kVec]) {
  if constexpr (kVec == 1) {
    out[0] = ToF32(*p);
  } else {
    static_assert(kVec * sizeof(T) == 16, "a packed access is 16 bytes");
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = ToF32(e[i]);
  }
}

template <typename T, int kVec>
__device__ __forceinline__ void StorePacked(T* p, const float (&in)[kVec]) {
  if constexpr (kVec == 1) {
    *p = FromF32<T>(in[0]);
  } else {
    static_assert(kVec * sizeof(T) == 16, "a packed access is 16 bytes");
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < kVec; ++i) e[i] = FromF32<T>(in[i]);
    *reinterpret_cast<uint4*>(p) = raw;
  }
}

// Whether every defined tensor's data starts on a 16-byte boundary (views from Slice may not).
inline bool IsAligned16(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t != nullptr && t->defined() && reinterpret_cast<uintptr_t>(t->raw_data()) % 16 != 0) {
      return false;
    }
  }
  return true;
}

}  // namespace moefold::ops::cuda
