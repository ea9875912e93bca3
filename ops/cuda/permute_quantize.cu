// CUDA PermuteQuantize (ops/permute_quantize.h): one thread block per output row reads its token's
// row once and writes FP8 codes. Per tensor: codes = fp8(x·scale) with the recipe's scale, the
// row's amax folded into one atomicMax per warp. Tiles: each warp quantises one 128-wide tile
// (4 elements a lane), its amax a warp max. The float operations are CastTransposeAmax's and
// QuantizeBlockwise's (the helpers of ops/cuda/fp8_cast.cuh): __fmul_rn, __fdiv_rn and the
// saturating RNE cast, so the bits equal the CPU reference's PermuteTokens-then-quantise.
#include <cfloat>
#include <cstdint>
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/fp8_cast.cuh"
#include "ops/cuda/launchers.h"
#include "ops/fp8.h"
#include "ops/permute_quantize.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;  // 8 warps per row
constexpr int kTileCols = 128;

__device__ __forceinline__ int64_t TokenOf(const int32_t* sorted, int64_t r, int k,
                                           int64_t tokens) {
  const int64_t pair = sorted[r];
  if (pair < 0 || pair >= tokens * k) {
    printf("moefold PermuteQuantize: sorted[%lld] = %lld outside [0, %lld)\n",
           static_cast<long long>(r), static_cast<long long>(pair),
           static_cast<long long>(tokens * k));
    __trap();
  }
  return pair / k;
}

// Per tensor: a grid-stride loop over rows, one block per row.
template <typename T>
__global__ void PermuteQuantizeTensorKernel(const T* __restrict__ x,
                                            const int32_t* __restrict__ sorted, int k,
                                            int64_t tokens, int64_t rows, int64_t h,
                                            const float* __restrict__ scale,
                                            const float* __restrict__ scale_inv,
                                            uint8_t* __restrict__ codes,
                                            float* __restrict__ row_scale_inv,
                                            uint32_t* __restrict__ amax,
                                            __nv_fp8_interpretation_t format) {
  const float s = *scale;
  uint32_t bits = 0;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* src = x + TokenOf(sorted, r, k, tokens) * h;
    uint8_t* dst = codes + r * h;
    for (int64_t j = threadIdx.x; j < h; j += blockDim.x) {
      const float v = ToF32(src[j]);
      bits = max(bits, AbsBits(v));
      dst[j] = CastFp8(__fmul_rn(v, s), format);
    }
    if (row_scale_inv != nullptr && threadIdx.x == 0) row_scale_inv[r] = *scale_inv;
  }
  if (amax != nullptr) {
    bits = WarpMaxBits(bits);
    if (threadIdx.x % 32 == 0 && bits != 0) atomicMax(amax, bits);
  }
}

// Tiles: a grid-stride loop over (row, tile) pairs, one warp per pair.
template <typename T>
__global__ void PermuteQuantizeTilesKernel(const T* __restrict__ x,
                                           const int32_t* __restrict__ sorted, int k,
                                           int64_t tokens, int64_t rows, int64_t h,
                                           uint8_t* __restrict__ codes,
                                           float* __restrict__ row_scale_inv, float fp8_max,
                                           bool pow2, __nv_fp8_interpretation_t format) {
  constexpr int kPerLane = kTileCols / 32;
  const int64_t tiles_per_row = h / kTileCols, pairs = rows * tiles_per_row;
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x / 32);
  for (int64_t p = int64_t{blockIdx.x} * (blockDim.x / 32) + threadIdx.x / 32; p < pairs;
       p += warps) {
    const int64_t r = p / tiles_per_row, b = p % tiles_per_row;
    const T* src = x + TokenOf(sorted, r, k, tokens) * h + b * kTileCols;
    float v[kPerLane];
    uint32_t bits = 0;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      v[e] = ToF32(src[lane + 32 * e]);
      bits = max(bits, AbsBits(v[e]));
    }
    bits = WarpMaxBits(bits);
    const float s = ScaleFromAmax(__uint_as_float(bits), fp8_max, pow2, 1.0f);
    if (lane == 0) row_scale_inv[p] = __fdiv_rn(1.0f, s);
    uint8_t* dst = codes + r * h + b * kTileCols;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) dst[lane + 32 * e] = CastFp8(__fmul_rn(v[e], s), format);
  }
}

}  // namespace

absl::Status PermuteQuantize(const Tensor& x, const Tensor& sorted, int k, const Tensor& scale,
                             const Tensor& scale_inv, const PermuteQuantizeOptions& options,
                             Tensor* codes, Tensor* row_scale_inv, Tensor* amax,
                             Stream& stream) {
  constexpr const char* kOp = "PermuteQuantize";
  const Device dev = x.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(x, dev, kOp, "x");
  CheckRank(x, 2, kOp, "x");
  CheckOn(sorted, dev, kOp, "sorted");
  CheckDType(sorted, DType::kI32, kOp, "sorted");
  MF_CHECK(k > 0) << kOp << ": k = " << k;
  const int64_t rows = sorted.numel(), h = x.dim(1), tokens = x.dim(0);
  CheckOn(*codes, dev, kOp, "codes");
  MF_CHECK(codes->dtype() == DType::kFp8E4M3 || codes->dtype() == DType::kFp8E5M2)
      << kOp << ": codes must be FP8, got " << codes->DebugString();
  CheckShape(*codes, {rows, h}, kOp, "codes");
  const __nv_fp8_interpretation_t format = Fp8Format(codes->dtype());
  const int64_t tiles = h / kTileCols;
  if (options.tiles) {
    CheckOut(row_scale_inv, dev, DType::kF32, {rows, tiles}, kOp, "row_scale_inv");
    if (rows == 0 || h == 0) return absl::OkStatus();
    const int grid = DeviceGrid(rows * tiles, kThreads / 32, kThreads, stream);
    MF_DISPATCH_FLOAT(x.dtype(), kOp, T,
                      PermuteQuantizeTilesKernel<T><<<grid, kThreads, 0, Native(stream)>>>(
                          x.data<T>(), sorted.data<int32_t>(), k, tokens, rows, h,
                          codes->data<uint8_t>(), row_scale_inv->data<float>(),
                          Fp8Max(codes->dtype()), options.pow2, format));
    MF_CUDA_CHECK_LAUNCH();
    return absl::OkStatus();
  }
  CheckIn(scale, dev, DType::kF32, {1}, kOp, "scale");
  if (row_scale_inv != nullptr) {
    CheckIn(scale_inv, dev, DType::kF32, {1}, kOp, "scale_inv");
    CheckOut(row_scale_inv, dev, DType::kF32, {rows, 1}, kOp, "row_scale_inv");
  }
  if (amax != nullptr) CheckOut(amax, dev, DType::kF32, {1}, kOp, "amax");
  if (rows == 0 || h == 0) return absl::OkStatus();
  const int grid = DeviceGrid(rows, 1, kThreads, stream);
  MF_DISPATCH_FLOAT(
      x.dtype(), kOp, T,
      PermuteQuantizeTensorKernel<T><<<grid, kThreads, 0, Native(stream)>>>(
          x.data<T>(), sorted.data<int32_t>(), k, tokens, rows, h, scale.data<float>(),
          row_scale_inv != nullptr ? scale_inv.data<float>() : nullptr, codes->data<uint8_t>(),
          row_scale_inv != nullptr ? row_scale_inv->data<float>() : nullptr,
          amax != nullptr ? static_cast<uint32_t*>(amax->raw_data()) : nullptr, format));
  MF_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace moefold::ops::cuda
