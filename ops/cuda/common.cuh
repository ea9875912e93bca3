// Device-side helpers shared by the CUDA kernels (internal to ops/cuda): bf16/f32 load and store,
// warp and block reductions, grid sizing, the dtype switch and the launch check.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/gpu_error.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "ops/cuda/check.h"

namespace moefold::ops::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ToF32(float x) { return x; }
__device__ __forceinline__ float ToF32(bf16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T FromF32(float x);
template <>
__device__ __forceinline__ float FromF32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 FromF32<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <typename T>
__device__ T BlockSum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = WarpSum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  T total = lane < warps ? partial[lane] : T(0);
  return WarpSum(total);
}

__device__ __forceinline__ float BlockMax(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  return WarpMax(lane < warps ? partial[lane] : -INFINITY);
}

inline cudaStream_t Native(const Stream& stream) {
  return static_cast<cudaStream_t>(stream.native());
}

// Blocks for a grid-stride loop over n items, capped (the loop covers the rest).
inline int GridFor(int64_t n, int threads, int cap = 65535 * 4) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

}  // namespace moefold::ops::cuda

// Checks the launch that just happened (configuration errors surface here, faults later).
#define MF_CUDA_CHECK_LAUNCH() MF_CUDA_CHECK(cudaGetLastError())

// Runs the statement list with `T` bound to float or bf16 for an activation dtype.
#define MF_DISPATCH_FLOAT(dtype, op, T, ...)                                            \
  do {                                                                                  \
    switch (dtype) {                                                                    \
      case ::moefold::DType::kF32: {                                                    \
        using T = float;                                                                \
        __VA_ARGS__;                                                                    \
        break;                                                                          \
      }                                                                                 \
      case ::moefold::DType::kBF16: {                                                   \
        using T = ::moefold::ops::cuda::bf16;                                           \
        __VA_ARGS__;                                                                    \
        break;                                                                          \
      }                                                                                 \
      default:                                                                          \
        MF_CHECK(false) << op << ": unsupported dtype " << ::moefold::DTypeName(dtype); \
    }                                                                                   \
  } while (0)
