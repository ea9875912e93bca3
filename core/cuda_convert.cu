// Element conversion on the device with the rounding of core/dtype.h: bf16/f16 by RNE, fp8 with
// __NV_SATFINITE (RNE, ±max on overflow and inf), integers by truncating casts through f32.
// One kernel per (source, destination) type pair; 16-byte packs of the wider type when both
// pointers allow (the last n mod N elements by a scalar launch), single elements otherwise; a
// grid-stride loop over a grid sized to the device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "core/cuda_runtime.h"
#include "core/gpu_error.h"

namespace moefold::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPacksInFlight = 4;  // independent loads each thread issues before converting

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(__nv_fp8_e4m3 v) { return static_cast<float>(v); }
__device__ __forceinline__ float ToFloat(__nv_fp8_e5m2 v) { return static_cast<float>(v); }
__device__ __forceinline__ float ToFloat(int32_t v) { return static_cast<float>(v); }
__device__ __forceinline__ float ToFloat(int64_t v) { return static_cast<float>(v); }
__device__ __forceinline__ float ToFloat(uint8_t v) { return static_cast<float>(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(x);
  } else if constexpr (std::is_same_v<T, __nv_fp8_e4m3>) {
    __nv_fp8_e4m3 r;
    r.__x = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    return r;
  } else if constexpr (std::is_same_v<T, __nv_fp8_e5m2>) {
    __nv_fp8_e5m2 r;
    r.__x = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
    return r;
  } else {
    return static_cast<T>(x);  // truncating integer cast
  }
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Packs i = first, first + stride, ... < packs, kPacksInFlight loaded before any is converted.
template <typename S, typename D, int N>
__global__ void ConvertKernel(const S* src, D* dst, int64_t packs) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t base = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; base < packs;
       base += stride * kPacksInFlight) {
    Pack<S, N> in[kPacksInFlight];
#pragma unroll
    for (int u = 0; u < kPacksInFlight; ++u) {
      const int64_t i = base + u * stride;
      if (i < packs) in[u] = reinterpret_cast<const Pack<S, N>*>(src)[i];
    }
#pragma unroll
    for (int u = 0; u < kPacksInFlight; ++u) {
      const int64_t i = base + u * stride;
      if (i >= packs) continue;
      Pack<D, N> out;
#pragma unroll
      for (int e = 0; e < N; ++e) out.v[e] = FromFloat<D>(ToFloat(in[u].v[e]));
      reinterpret_cast<Pack<D, N>*>(dst)[i] = out;
    }
  }
}

template <typename T>
struct Type {
  using type = T;
};

// f(Type<T>{}) with T the device type of `dtype`.
template <typename F>
absl::Status WithType(DType dtype, const F& f) {
  switch (dtype) {
    case DType::kF32:
      return f(Type<float>{});
    case DType::kBF16:
      return f(Type<__nv_bfloat16>{});
    case DType::kF16:
      return f(Type<__half>{});
    case DType::kFp8E4M3:
      return f(Type<__nv_fp8_e4m3>{});
    case DType::kFp8E5M2:
      return f(Type<__nv_fp8_e5m2>{});
    case DType::kI32:
      return f(Type<int32_t>{});
    case DType::kI64:
      return f(Type<int64_t>{});
    case DType::kU8:
      return f(Type<uint8_t>{});
  }
  return absl::InvalidArgumentError("Convert: unknown dtype");
}

// Blocks for `packs` packs: enough to cover them, no more than the current device holds at once.
absl::StatusOr<int> GridFor(int64_t packs) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> resident_blocks[kMaxDevices];  // 0 = not read yet
  int device = 0;
  MF_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  int resident = device < kMaxDevices ? resident_blocks[device].load(std::memory_order_relaxed) : 0;
  if (resident == 0) {
    int sms = 0, threads = 0;
    MF_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    MF_CUDA_RETURN_IF_ERROR(
        cudaDeviceGetAttribute(&threads, cudaDevAttrMaxThreadsPerMultiProcessor, device));
    resident = sms * (threads / kThreads);
    if (device < kMaxDevices) resident_blocks[device].store(resident, std::memory_order_relaxed);
  }
  const int64_t needed =
      (packs + int64_t{kThreads} * kPacksInFlight - 1) / (int64_t{kThreads} * kPacksInFlight);
  const int64_t blocks = needed < resident ? needed : resident;
  return static_cast<int>(blocks < 1 ? 1 : blocks);
}

template <typename S, typename D, int N>
absl::Status Launch(const S* src, D* dst, int64_t packs, cudaStream_t stream) {
  const absl::StatusOr<int> grid = GridFor(packs);
  if (!grid.ok()) return grid.status();
  ConvertKernel<S, D, N><<<*grid, kThreads, 0, stream>>>(src, dst, packs);
  MF_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status Convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n,
                     void* stream) {
  if (n == 0) return absl::OkStatus();
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  return WithType(src_dtype, [&](auto src_type) {
    return WithType(dst_dtype, [&](auto dst_type) -> absl::Status {
      using S = typename decltype(src_type)::type;
      using D = typename decltype(dst_type)::type;
      // 16 bytes of the wider type per pack; both sides aligned to their pack size.
      constexpr int kWidth = 16 / static_cast<int>(sizeof(S) > sizeof(D) ? sizeof(S) : sizeof(D));
      const S* from = static_cast<const S*>(src);
      D* to = static_cast<D*>(dst);
      const bool aligned = reinterpret_cast<uintptr_t>(from) % (kWidth * sizeof(S)) == 0 &&
                           reinterpret_cast<uintptr_t>(to) % (kWidth * sizeof(D)) == 0;
      const int64_t total = static_cast<int64_t>(n);
      const int64_t body = aligned ? total / kWidth * kWidth : 0;
      if (body > 0) MF_RETURN_IF_ERROR((Launch<S, D, kWidth>(from, to, body / kWidth, s)));
      if (body < total) return Launch<S, D, 1>(from + body, to + body, total - body, s);
      return absl::OkStatus();
    });
  });
}

}  // namespace moefold::cuda
