// Vector access and device-sized grids for the memory-bound kernels (internal to ops/cuda).
// A Pack<T, N> is N consecutive elements moved by one load or store of N·sizeof(T) bytes: 16 on the
// vector path, sizeof(T) on the scalar fallback. The host picks N once per launch, after checking
// that every pointer (and every row stride) is a multiple of the pack size, since views made by
// Slice may start anywhere. The arithmetic on a pack is element by element, so a kernel written
// once over Pack<T, N> gives bit-identical results for every N.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "core/gpu_error.h"
#include "core/status.h"
#include "core/stream.h"

namespace moefold::ops::cuda {

inline constexpr int kVectorBytes = 16;
// Elements of T in one 16-byte vector.
template <typename T>
inline constexpr int kVecWidth = kVectorBytes / static_cast<int>(sizeof(T));
// Packs each thread loads before it computes on any of them: independent loads in flight.
inline constexpr int kPacksInFlight = 4;
inline constexpr int kPacksInFlightWide = 2;  // for kernels loading three or more streams

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// `p` must be aligned to the pack size (the host checked it); one vector load or store.
template <int N, typename T>
__device__ __forceinline__ Pack<T, N> LoadPack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}
template <int N, typename T>
__device__ __forceinline__ void StorePack(T* p, const Pack<T, N>& pack) {
  *reinterpret_cast<Pack<T, N>*>(p) = pack;
}

// The pack loop every kernel here uses: pack indices begin, begin + stride, ... < packs, taken
// kInFlight at a time. `load(i)` (reads only) runs for all of them before `use(i, loaded)` runs for
// any, so the loads are in flight together even where outputs may alias inputs (which forbids the
// compiler to hoist a load above an earlier store). Each index is loaded and used by the same
// thread, so an output may alias an input element for element. Kernels that load three or more
// streams take 2 at a time: the registers of 4 would cut the threads resident per multiprocessor
// more than the extra loads help.
template <int kInFlight = kPacksInFlight, typename Load, typename Use>
__device__ __forceinline__ void ForEachPack(int64_t begin, int64_t packs, int64_t stride, Load load,
                                            Use use) {
  using Loaded = decltype(load(int64_t{0}));
  for (int64_t base = begin; base < packs; base += stride * kInFlight) {
    Loaded in[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t i = base + u * stride;
      if (i < packs) in[u] = load(i);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t i = base + u * stride;
      if (i < packs) use(i, in[u]);
    }
  }
}

// Host side.

// Whether `p` is a multiple of `bytes` (a power of two).
inline bool IsAligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// Whether every pointer starts a 16-byte vector and rows of `row` elements of T (the stride
// between the rows the kernel walks) keep the next row's start aligned too.
template <typename T>
bool VectorAligned(std::initializer_list<const void*> pointers, int64_t row) {
  if (row % kVecWidth<T> != 0) return false;
  for (const void* p : pointers) {
    if (p != nullptr && !IsAligned(p, kVectorBytes)) return false;
  }
  return true;
}

// Calls launch(width) once, width a std::integral_constant<int, N> for the kernel's template
// argument: N = kVecWidth<T> when the pointers and rows allow 16-byte packs (VectorAligned), else
// 1, the scalar fallback.
template <typename T, typename Launch>
void WithPackWidth(std::initializer_list<const void*> pointers, int64_t row, const Launch& launch) {
  if (VectorAligned<T>(pointers, row)) {
    launch(std::integral_constant<int, kVecWidth<T>>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

// A flat run of n elements: the first n − n mod N as packs of N when `aligned`, the rest (all of
// them when not aligned) as single elements. Calls launch(width, offset, count) once or twice, with
// width a std::integral_constant<int, N or 1> for the kernel's template argument.
template <int N, typename Launch>
void ForBodyAndTail(int64_t n, bool aligned, const Launch& launch) {
  const int64_t body = aligned ? n / N * N : 0;
  if (body > 0) launch(std::integral_constant<int, N>{}, int64_t{0}, body);
  if (body < n) launch(std::integral_constant<int, 1>{}, body, n - body);
}

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
