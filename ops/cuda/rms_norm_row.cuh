// RMSNorm's row statistics as one warp computes them (internal to ops/cuda), shared by the norm
// kernels (norm.cu) and the fused RMSNorm → FP8 producer (fp8_fused.cu): the lane's partial sum of
// squares over packs lane, lane + 32, … of N elements, then the warp sum and rstd. The order of
// the f32 sums depends on N, so a caller that must match RmsNormForward's bits launches with the
// pack width that RmsNormForward would pick.
#pragma once

#include <cstdint>

#include "ops/cuda/common.cuh"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {

template <typename T, int N>
__device__ __forceinline__ float LaneSumSquares(const T* xr, int64_t packs) {
  float sq = 0.0f;
  ForEachPack(
      threadIdx.x % 32, packs, 32, [&](int64_t i) { return LoadPack<N>(xr + i * N); },
      [&](int64_t, const Pack<T, N>& p) {
#pragma unroll
        for (int e = 0; e < N; ++e) {
          const float v = ToF32(p.v[e]);
          sq += v * v;
        }
      });
  return sq;
}

template <typename T, int N>
struct AddendPacks {
  Pack<T, N> x, residual;
};

// The residual form: sum = x + residual rounded to T and stored, its squares summed (the lane's
// packs, as LaneSumSquares).
template <typename T, int N>
__device__ __forceinline__ float LaneAddSumSquares(const T* xr, const T* rr, T* sr,
                                                   int64_t packs) {
  float sq = 0.0f;
  ForEachPack(
      threadIdx.x % 32, packs, 32,
      [&](int64_t i) {
        return AddendPacks<T, N>{LoadPack<N>(xr + i * N), LoadPack<N>(rr + i * N)};
      },
      [&](int64_t i, const AddendPacks<T, N>& in) {
        Pack<T, N> s;
#pragma unroll
        for (int e = 0; e < N; ++e) {
          s.v[e] = FromF32<T>(ToF32(in.x.v[e]) + ToF32(in.residual.v[e]));
          const float v = ToF32(s.v[e]);
          sq += v * v;
        }
        StorePack<N>(sr + i * N, s);
      });
  return sq;
}

// rstd = 1/sqrt(Σ x² / H + eps) from the lanes' partial sums (every lane gets it).
__device__ __forceinline__ float RstdFromLaneSums(float sq, int64_t hidden, float eps) {
  return 1.0f / sqrtf(WarpSum(sq) / static_cast<float>(hidden) + eps);
}

}  // namespace moefold::ops::cuda
