// The blockwise FP8 GEMM kernel (ops/fp8_gemm.h) and the padded transpose. The kernel stages
// 64×32 slices of both K-major operands in shared memory (codes widened to f32, which is exact),
// sums each K block of block_k in f32 per output, and promotes it into the f32 accumulator with
// the block's two scales — the per-block promotion that keeps E4M3's short mantissa from eating
// long sums, as the CPU reference does block by block. A plain CUDA-core kernel: correct and
// simple; a wgmma kernel (or cuBLASLt's VEC128/BLK128x128 scale modes) is the faster follow-up.
#include <cuda_fp8.h>

#include "ops/cuda/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kTile = 64;     // output rows and columns per thread block
constexpr int kSlice = 32;    // K elements staged per step (divides every block_k we use)
constexpr int kThreads = 16;  // 16 × 16 threads, each 4 × 4 outputs

__device__ __forceinline__ float CodeToF32(uint8_t code, __nv_fp8_interpretation_t format) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(code, format);
  return __half2float(__half(h));
}

template <typename C>
__global__ void Fp8GemmBlockwiseKernel(const uint8_t* __restrict__ a, __nv_fp8_interpretation_t fa,
                                       const float* __restrict__ sa, int64_t ra,
                                       const uint8_t* __restrict__ b, __nv_fp8_interpretation_t fb,
                                       const float* __restrict__ sb, int64_t rb, int64_t m,
                                       int64_t n, int64_t k, int64_t block_k, float beta,
                                       C* __restrict__ c) {
  __shared__ float as[kSlice][kTile + 1];
  __shared__ float bs[kSlice][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kThreads + tx;
  const int64_t row0 = int64_t{blockIdx.y} * kTile, col0 = int64_t{blockIdx.x} * kTile;
  const int64_t blocks = k / block_k;
  float acc[4][4] = {}, part[4][4] = {};
  for (int64_t kb = 0; kb < blocks; ++kb) {
    for (int64_t k0 = kb * block_k; k0 < (kb + 1) * block_k; k0 += kSlice) {
      // 64 rows × 32 K of each operand: 2048 codes per operand over 256 threads.
      for (int e = tid; e < kTile * kSlice; e += kThreads * kThreads) {
        const int r = e / kSlice, kk = e % kSlice;
        const int64_t ka = k0 + kk;
        const int64_t gr = row0 + r, gc = col0 + r;
        as[kk][r] = gr < m && ka < k ? CodeToF32(a[gr * k + ka], fa) : 0.0f;
        bs[kk][r] = gc < n && ka < k ? CodeToF32(b[gc * k + ka], fb) : 0.0f;
      }
      __syncthreads();
#pragma unroll 4
      for (int kk = 0; kk < kSlice; ++kk) {
        float av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = as[kk][ty + i * kThreads];
#pragma unroll
        for (int j = 0; j < 4; ++j) bv[j] = bs[kk][tx + j * kThreads];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) part[i][j] = fmaf(av[i], bv[j], part[i][j]);
        }
      }
      __syncthreads();
    }
    // Promote the block's partial sums with its scales.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t r = row0 + ty + i * kThreads;
      const float s_a = r < m ? sa[(r / ra) * blocks + kb] : 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t col = col0 + tx + j * kThreads;
        const float s_b = col < n ? sb[(col / rb) * blocks + kb] : 0.0f;
        acc[i][j] += part[i][j] * (s_a * s_b);
        part[i][j] = 0.0f;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = row0 + ty + i * kThreads;
    if (r >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = col0 + tx + j * kThreads;
      if (col >= n) continue;
      float v = acc[i][j];
      if (beta != 0.0f) v += ToF32(c[r * n + col]);
      c[r * n + col] = FromF32<C>(v);
    }
  }
}

template <typename T>
__global__ void TransposePadKernel(const T* __restrict__ x, int64_t m, int64_t n, int64_t mp,
                                   T* __restrict__ y) {
  __shared__ T tile[32][33];
  const int64_t i0 = int64_t{blockIdx.y} * 32, j0 = int64_t{blockIdx.x} * 32;
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t i = i0 + r, j = j0 + threadIdx.x;
    tile[r][threadIdx.x] = i < m && j < n ? x[i * n + j] : T(0);
  }
  __syncthreads();
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t j = j0 + r, i = i0 + threadIdx.x;
    if (j < n && i < mp) y[j * mp + i] = tile[threadIdx.x][r];
  }
}

__nv_fp8_interpretation_t Format(DType dtype) {
  return dtype == DType::kFp8E4M3 ? __NV_E4M3 : __NV_E5M2;
}

}  // namespace

void Fp8GemmBlockwise(const Tensor& a, const Tensor& a_scale_inv, const Tensor& b,
                      const Tensor& b_scale_inv, int64_t block_k, float beta, Tensor* c,
                      Stream& stream) {
  MF_CHECK(block_k % kSlice == 0) << "Fp8Gemm: block " << block_k << " % " << kSlice;
  const int64_t m = a.dim(0), n = b.dim(0), k = a.dim(1), blocks = k / block_k;
  const int64_t ra = m / (a_scale_inv.numel() / blocks), rb = n / (b_scale_inv.numel() / blocks);
  const dim3 grid(static_cast<unsigned>((n + kTile - 1) / kTile),
                  static_cast<unsigned>((m + kTile - 1) / kTile));
  const dim3 threads(kThreads, kThreads);
  const auto* pa = static_cast<const uint8_t*>(a.raw_data());
  const auto* pb = static_cast<const uint8_t*>(b.raw_data());
  if (c->dtype() == DType::kF32) {
    Fp8GemmBlockwiseKernel<float><<<grid, threads, 0, Native(stream)>>>(
        pa, Format(a.dtype()), a_scale_inv.data<float>(), ra, pb, Format(b.dtype()),
        b_scale_inv.data<float>(), rb, m, n, k, block_k, beta, c->data<float>());
  } else {
    Fp8GemmBlockwiseKernel<bf16><<<grid, threads, 0, Native(stream)>>>(
        pa, Format(a.dtype()), a_scale_inv.data<float>(), ra, pb, Format(b.dtype()),
        b_scale_inv.data<float>(), rb, m, n, k, block_k, beta,
        static_cast<bf16*>(c->raw_data()));
  }
  MF_CUDA_CHECK_LAUNCH();
}

void TransposePad(const Tensor& x, Tensor* y, Stream& stream) {
  CheckStream(stream, x.device(), "TransposePad");
  CheckOn(*y, x.device(), "TransposePad", "y");
  const int64_t m = x.dim(0), n = x.dim(1), mp = y->dim(1);
  if (n == 0 || mp == 0) return;
  const dim3 grid(static_cast<unsigned>((n + 31) / 32), static_cast<unsigned>((mp + 31) / 32));
  const dim3 threads(32, 8);
  switch (DTypeSize(x.dtype())) {
    case 1:
      TransposePadKernel<uint8_t><<<grid, threads, 0, Native(stream)>>>(
          static_cast<const uint8_t*>(x.raw_data()), m, n, mp, static_cast<uint8_t*>(y->raw_data()));
      break;
    case 2:
      TransposePadKernel<uint16_t><<<grid, threads, 0, Native(stream)>>>(
          static_cast<const uint16_t*>(x.raw_data()), m, n, mp,
          static_cast<uint16_t*>(y->raw_data()));
      break;
    default:
      TransposePadKernel<uint32_t><<<grid, threads, 0, Native(stream)>>>(
          static_cast<const uint32_t*>(x.raw_data()), m, n, mp,
          static_cast<uint32_t*>(y->raw_data()));
      break;
  }
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
