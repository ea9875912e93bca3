// Device FP8 helpers shared by ops/cuda/fp8.cu and ops/cuda/fp8_fused.cu (internal to ops/cuda):
// amax bits (NaN ordered above +Inf), the saturating cast, the scale from an amax and the warp
// max, written once so the fused producers round exactly as the unfused quantisers.
#pragma once

#include <cfloat>
#include <cstdint>

#include "ops/cuda/common.cuh"

namespace moefold::ops::cuda {

__device__ __forceinline__ uint32_t AbsBits(float v) {
  const uint32_t bits = __float_as_uint(v) & 0x7fffffffu;
  return bits > 0x7f800000u ? 0x7fc00000u : bits;
}

__device__ __forceinline__ uint8_t CastFp8(float v, __nv_fp8_interpretation_t format) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, format));
}

// Fp8ScaleFromAmax with the CPU's IEEE operations.
__device__ __forceinline__ float ScaleFromAmax(float amax, float fp8_max, bool pow2,
                                               float previous) {
  if (!(amax > 0.0f) || !isfinite(amax)) return previous;
  float scale = __fdiv_rn(fp8_max, amax);
  if (!isfinite(scale)) scale = FLT_MAX;
  if (pow2) scale = __uint_as_float(__float_as_uint(scale) & 0xff800000u);
  return scale;
}

__device__ __forceinline__ uint32_t WarpMaxBits(uint32_t v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

inline __nv_fp8_interpretation_t Fp8Format(DType dtype) {
  return dtype == DType::kFp8E4M3 ? __NV_E4M3 : __NV_E5M2;
}

}  // namespace moefold::ops::cuda
