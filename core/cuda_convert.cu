// Element conversion on the device with the rounding of core/dtype.h: bf16/f16 by RNE, fp8 with
// __NV_SATFINITE (RNE, ±max on overflow and inf), integers by truncating casts through f32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_runtime.h"
#include "core/gpu_error.h"

namespace moefold::cuda {
namespace {

__device__ float LoadAsFloat(const void* src, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kF32: return static_cast<const float*>(src)[i];
    case DType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(src)[i]);
    case DType::kF16: return __half2float(static_cast<const __half*>(src)[i]);
    case DType::kFp8E4M3: {
      const __nv_fp8_e4m3 v = static_cast<const __nv_fp8_e4m3*>(src)[i];
      return static_cast<float>(v);
    }
    case DType::kFp8E5M2: {
      const __nv_fp8_e5m2 v = static_cast<const __nv_fp8_e5m2*>(src)[i];
      return static_cast<float>(v);
    }
    case DType::kI32: return static_cast<float>(static_cast<const int32_t*>(src)[i]);
    case DType::kI64: return static_cast<float>(static_cast<const int64_t*>(src)[i]);
    case DType::kU8: return static_cast<float>(static_cast<const uint8_t*>(src)[i]);
  }
  return 0.0f;
}

__device__ void StoreFloat(float x, void* dst, DType dtype, size_t i) {
  switch (dtype) {
    case DType::kF32: static_cast<float*>(dst)[i] = x; break;
    case DType::kBF16: static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(x); break;
    case DType::kF16: static_cast<__half*>(dst)[i] = __float2half_rn(x); break;
    case DType::kFp8E4M3:
      static_cast<__nv_fp8_storage_t*>(dst)[i] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
      break;
    case DType::kFp8E5M2:
      static_cast<__nv_fp8_storage_t*>(dst)[i] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
      break;
    case DType::kI32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(x); break;
    case DType::kI64: static_cast<int64_t*>(dst)[i] = static_cast<int64_t>(x); break;
    case DType::kU8: static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(x); break;
  }
}

__global__ void ConvertKernel(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                              size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    StoreFloat(LoadAsFloat(src, src_dtype, i), dst, dst_dtype, i);
  }
}

}  // namespace

absl::Status Convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n,
                     void* stream) {
  if (n == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  const size_t blocks = (n + kThreads - 1) / kThreads;
  const int grid = static_cast<int>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  ConvertKernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(src, src_dtype, dst,
                                                                         dst_dtype, n);
  MF_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace moefold::cuda
