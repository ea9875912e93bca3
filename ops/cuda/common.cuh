// Device-side helpers shared by the CUDA kernels (internal to ops/cuda): conversions to and from f32,
// warp and block reductions, grid-stride indices and device-sized grids, the dtype switch and the
// launch check.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "core/gpu_error.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "ops/cuda/check.h"

namespace moefold::ops::cuda {

using bf16 = __nv_bfloat16;

// Every floating dtype widens exactly to f32; only f32 and bf16 are stored from f32.
__device__ __forceinline__ float ToF32(float x) { return x; }
__device__ __forceinline__ float ToF32(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToF32(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToF32(__nv_fp8_e4m3 x) { return static_cast<float>(x); }
__device__ __forceinline__ float ToF32(__nv_fp8_e5m2 x) { return static_cast<float>(x); }
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

inline cudaStream_t Native(const Stream& stream) {
  return static_cast<cudaStream_t>(stream.native());
}

// A grid-stride loop over items: this thread's first item, and the stride (threads in the grid).
__device__ __forceinline__ int64_t FirstThread() {
  return blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
}
__device__ __forceinline__ int64_t GridThreads() { return int64_t{gridDim.x} * blockDim.x; }

// The stream's GPU: multiprocessors and resident threads per multiprocessor, read once per device
// (a driver query per launch would cost more than the small kernels it sizes).
struct DeviceShape {
  int multiprocessors;
  int threads_per_multiprocessor;
};
inline DeviceShape ShapeOf(const Stream& stream) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int64_t> cache[kMaxDevices];  // (sms << 32 | threads); 0 = not read yet
  const int device = stream.device().index;
  MF_CHECK(device >= 0 && device < kMaxDevices) << "device index " << device;
  int64_t packed = cache[device].load(std::memory_order_relaxed);
  if (packed == 0) {
    int sms = 0, threads = 0;
    MF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    MF_CUDA_CHECK(cudaDeviceGetAttribute(&threads, cudaDevAttrMaxThreadsPerMultiProcessor, device));
    packed = (int64_t{sms} << 32) | threads;
    cache[device].store(packed, std::memory_order_relaxed);
  }
  return {static_cast<int>(packed >> 32), static_cast<int>(packed & 0xffffffff)};
}

// Blocks of `threads` for a grid-stride loop over `items` work items, `per_block` of them per block
// and step: enough to cover them, but no more than the device's thread slots hold at once (a
// second wave would only add a tail; where registers allow fewer resident blocks, the extra ones
// wait and the loop stays correct). At least 1.
inline int DeviceGrid(int64_t items, int64_t per_block, int threads, const Stream& stream) {
  const DeviceShape shape = ShapeOf(stream);
  const int64_t resident =
      int64_t{shape.multiprocessors} * (shape.threads_per_multiprocessor / threads);
  const int64_t needed = (items + per_block - 1) / per_block;
  const int64_t blocks = needed < resident ? needed : resident;
  return static_cast<int>(blocks < 1 ? 1 : blocks);
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
