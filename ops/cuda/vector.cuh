// 16-byte vector access for the memory-bound kernels (internal to ops/cuda). A Pack<T, N> is N
// consecutive elements moved by one load or store of N·sizeof(T) bytes: 16 on the vector path,
// sizeof(T) on the scalar fallback. The host picks N once per launch, after checking that every
// pointer (and every row stride) is a multiple of the pack size, since views made by Slice may
// start anywhere. The arithmetic on a pack is element by element, so a kernel written once over
// Pack<T, N> gives bit-identical results for every N.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "core/stream.h"
#include "ops/cuda/check.h"
#include "ops/cuda/common.cuh"

namespace moefold::ops::cuda {

inline constexpr int kVectorBytes = 16;
// Elements of T in one 16-byte vector: 4 f32 or 8 bf16.
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

// A pack's elements widened to f32 (exact), for kernels that compute on f32 arrays.
template <typename T, int N>
__device__ __forceinline__ void PackToF32(const Pack<T, N>& pack, float (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = ToF32(pack.v[i]);
}
// f32 values rounded once each to T (round to nearest even).
template <typename T, int N>
__device__ __forceinline__ Pack<T, N> PackFromF32(const float (&in)[N]) {
  Pack<T, N> pack;
#pragma unroll
  for (int i = 0; i < N; ++i) pack.v[i] = FromF32<T>(in[i]);
  return pack;
}

// The pack loop every flat kernel here uses: pack indices begin, begin + stride, ... < packs, taken
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

// Blocks of `threads` for a grid-stride ForEachPack over `packs` packs (kPacksInFlight per thread
// and step).
inline int PackGrid(int64_t packs, int threads, const Stream& stream) {
  return DeviceGrid(packs, int64_t{threads} * kPacksInFlight, threads, stream);
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

}  // namespace moefold::ops::cuda
