// CUDA FP8 quantisation (ops/fp8.h): cast + transpose + amax through 32×32 tiles staged in shared
// memory (both outputs written coalesced), one thread block per quantisation block for the
// blockwise recipe, one thread per tensor for the scale update. Every product is __fmul_rn and
// every cast __nv_cvt_float_to_fp8(·, __NV_SATFINITE, ·), as the CPU reference rounds; amaxes are
// maxima of |x|'s bits (NaN → 0x7FC00000), so atomics and reduction order change no bit.
#include <cfloat>
#include <cstdint>

#include "ops/cuda/common.cuh"
#include "ops/cuda/fp8_cast.cuh"
#include "ops/cuda/launchers.h"
#include "ops/fp8.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kTile = 32;     // transpose tile edge
constexpr int kTileRows = 8;  // threadIdx.y extent: each thread handles kTile / kTileRows rows
constexpr int kMaxThreads = 256;

__device__ __forceinline__ float Fp8ToF32(uint8_t code, __nv_fp8_interpretation_t format) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(code, format);
  return __half2float(__half(h));
}

// Max over a 1-D block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ uint32_t BlockMaxBits(uint32_t v) {
  __shared__ uint32_t partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = WarpMaxBits(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0u;
  return WarpMaxBits(v);
}

__nv_fp8_interpretation_t Format(DType dtype) { return Fp8Format(dtype); }

void CheckFp8(const Tensor& t, const Device& device, const char* op, const char* name) {
  CheckOn(t, device, op, name);
  MF_CHECK(t.dtype() == DType::kFp8E4M3 || t.dtype() == DType::kFp8E5M2)
      << op << ": " << name << " must be fp8_e4m3 or fp8_e5m2, got " << t.DebugString();
}

// A rank-2 tensor whose dimensions the block divides: the public op has returned InvalidArgument
// otherwise, so here it is an invariant.
void CheckBlocks(const Tensor& t, const Fp8BlockShape& block, const char* op, const char* name) {
  CheckRank(t, 2, op, name);
  MF_CHECK(block.rows > 0 && block.cols > 0 && t.dim(0) % block.rows == 0 &&
           t.dim(1) % block.cols == 0)
      << op << ": block " << block.rows << "×" << block.cols << " for " << name << " "
      << t.DebugString();
}

// Block (kTile, kTileRows); a grid-stride loop over the 32×32 tiles of x (M, N). y, y_t, amax may
// be null. amax holds f32 bits ≥ 0 (or the quiet NaN): unsigned max is the order of magnitudes.
template <typename T>
__global__ void CastTransposeAmaxKernel(const T* __restrict__ x, const float* __restrict__ scale,
                                        uint8_t* __restrict__ y, uint8_t* __restrict__ y_t,
                                        uint32_t* __restrict__ amax, int64_t m, int64_t n,
                                        __nv_fp8_interpretation_t format) {
  __shared__ uint8_t tile[kTile][kTile + 1];  // +1: the transposed reads hit distinct banks
  const float s = *scale;
  const int64_t tiles_n = (n + kTile - 1) / kTile, tiles = (m + kTile - 1) / kTile * tiles_n;
  uint32_t bits = 0;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t r0 = t / tiles_n * kTile, c0 = t % tiles_n * kTile;
    for (int k = threadIdx.y; k < kTile; k += kTileRows) {
      const int64_t i = r0 + k, j = c0 + threadIdx.x;
      if (i < m && j < n) {
        const float v = ToF32(x[i * n + j]);
        bits = max(bits, AbsBits(v));
        const uint8_t code = CastFp8(__fmul_rn(v, s), format);
        if (y != nullptr) y[i * n + j] = code;
        tile[k][threadIdx.x] = code;
      }
    }
    if (y_t != nullptr) {
      __syncthreads();
      for (int k = threadIdx.y; k < kTile; k += kTileRows) {
        const int64_t j = c0 + k, i = r0 + threadIdx.x;
        if (i < m && j < n) y_t[j * m + i] = tile[threadIdx.x][k];
      }
      __syncthreads();  // the next tile overwrites `tile`
    }
  }
  if (amax != nullptr) {
    bits = WarpMaxBits(bits);  // blockDim.x == 32: a row of threads is one warp
    if (threadIdx.x == 0 && bits != 0) atomicMax(amax, bits);
  }
}

// One thread block per quantisation block, a grid-stride loop over the (M/rows)·(N/cols) blocks.
template <typename T>
__global__ void QuantizeBlockwiseKernel(const T* __restrict__ x, uint8_t* __restrict__ q,
                                        float* __restrict__ scale_inv, int64_t n, int64_t rows,
                                        int64_t cols, int64_t blocks_n, int64_t blocks,
                                        float fp8_max, bool pow2,
                                        __nv_fp8_interpretation_t format) {
  const int64_t size = rows * cols;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t r0 = b / blocks_n * rows, c0 = b % blocks_n * cols;
    uint32_t bits = 0;
    for (int64_t e = threadIdx.x; e < size; e += blockDim.x) {
      bits = max(bits, AbsBits(ToF32(x[(r0 + e / cols) * n + c0 + e % cols])));
    }
    bits = BlockMaxBits(bits);
    const float s = ScaleFromAmax(__uint_as_float(bits), fp8_max, pow2, 1.0f);
    if (threadIdx.x == 0) scale_inv[b] = __fdiv_rn(1.0f, s);
    for (int64_t e = threadIdx.x; e < size; e += blockDim.x) {
      const int64_t at = (r0 + e / cols) * n + c0 + e % cols;
      q[at] = CastFp8(__fmul_rn(ToF32(x[at]), s), format);
    }
  }
}

template <typename T>
__global__ void DequantizeBlockwiseKernel(const uint8_t* __restrict__ q,
                                          const float* __restrict__ scale_inv, T* __restrict__ x,
                                          int64_t m, int64_t n, int64_t rows, int64_t cols,
                                          int64_t blocks_n, __nv_fp8_interpretation_t format) {
  for (int64_t at = FirstThread(); at < m * n; at += GridThreads()) {
    const int64_t i = at / n, j = at % n;
    x[at] =
        FromF32<T>(__fmul_rn(Fp8ToF32(q[at], format), scale_inv[i / rows * blocks_n + j / cols]));
  }
}

// One thread per tensor of the group: roll its history column, insert and zero its amax, rescale.
__global__ void UpdateScalesKernel(float fp8_max, float* __restrict__ amax,
                                   float* __restrict__ history, int64_t length,
                                   float* __restrict__ scale, float* __restrict__ scale_inv,
                                   int64_t t) {
  for (int64_t k = FirstThread(); k < t; k += GridThreads()) {
    uint32_t bits = AbsBits(amax[k]);
    if (history != nullptr) {
      for (int64_t l = length - 1; l > 0; --l) history[l * t + k] = history[(l - 1) * t + k];
      history[k] = amax[k];
      amax[k] = 0.0f;
      for (int64_t l = 0; l < length; ++l) bits = max(bits, AbsBits(history[l * t + k]));
    }
    const float s = ScaleFromAmax(__uint_as_float(bits), fp8_max, false, scale[k]);
    scale[k] = s;
    scale_inv[k] = __fdiv_rn(1.0f, s);
  }
}

int BlockThreads(int64_t size) {
  const int64_t rounded = (size + 31) / 32 * 32;
  return static_cast<int>(rounded < kMaxThreads ? rounded : kMaxThreads);
}

}  // namespace

void CastTransposeAmax(const Tensor& x, const Tensor& scale, Tensor* y, Tensor* y_t, Tensor* amax,
                       Stream& stream) {
  constexpr const char* kOp = "CastTransposeAmax";
  const Device dev = x.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(x, dev, kOp, "x");
  CheckRank(x, 2, kOp, "x");
  const int64_t m = x.dim(0), n = x.dim(1);
  CheckIn(scale, dev, DType::kF32, {1}, kOp, "scale");
  if (y != nullptr) {
    CheckFp8(*y, dev, kOp, "y");
    CheckShape(*y, {m, n}, kOp, "y");
  }
  if (y_t != nullptr) {
    CheckFp8(*y_t, dev, kOp, "y_t");
    CheckShape(*y_t, {n, m}, kOp, "y_t");
    MF_CHECK(y == nullptr || y->dtype() == y_t->dtype())
        << kOp << ": y " << y->DebugString() << " and y_t " << y_t->DebugString();
  }
  if (amax != nullptr) CheckOut(amax, dev, DType::kF32, {1}, kOp, "amax");
  if (m == 0 || n == 0) return;
  const DType format = y != nullptr ? y->dtype() : y_t != nullptr ? y_t->dtype() : DType::kFp8E4M3;
  uint8_t* py = y != nullptr ? y->data<uint8_t>() : nullptr;
  uint8_t* pt = y_t != nullptr ? y_t->data<uint8_t>() : nullptr;
  uint32_t* pa = amax != nullptr ? static_cast<uint32_t*>(amax->raw_data()) : nullptr;
  const int64_t tiles = (m + kTile - 1) / kTile * ((n + kTile - 1) / kTile);
  const dim3 threads(kTile, kTileRows);
  const int grid = DeviceGrid(tiles, 1, kTile * kTileRows, stream);
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T,
                    CastTransposeAmaxKernel<T><<<grid, threads, 0, Native(stream)>>>(
                        x.data<T>(), scale.data<float>(), py, pt, pa, m, n, Format(format)));
  MF_CUDA_CHECK_LAUNCH();
}

absl::Status QuantizeBlockwise(const Tensor& x, const Fp8BlockShape& block,
                               const BlockwiseOptions& options, Tensor* q, Tensor* scale_inv,
                               Stream& stream) {
  constexpr const char* kOp = "QuantizeBlockwise";
  const Device dev = x.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(x, dev, kOp, "x");
  CheckBlocks(x, block, kOp, "x");
  const int64_t m = x.dim(0), n = x.dim(1), bm = m / block.rows, bn = n / block.cols;
  MF_CHECK(q != nullptr) << kOp << ": q is null";
  CheckFp8(*q, dev, kOp, "q");
  CheckShape(*q, {m, n}, kOp, "q");
  CheckOut(scale_inv, dev, DType::kF32, {bm, bn}, kOp, "scale_inv");
  if (m == 0 || n == 0) return absl::OkStatus();
  const int threads = BlockThreads(block.rows * block.cols);
  const int grid = DeviceGrid(bm * bn, 1, threads, stream);
  const float fp8_max = Fp8Max(q->dtype());
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T,
                    QuantizeBlockwiseKernel<T><<<grid, threads, 0, Native(stream)>>>(
                        x.data<T>(), q->data<uint8_t>(), scale_inv->data<float>(), n, block.rows,
                        block.cols, bn, bm * bn, fp8_max, options.pow2, Format(q->dtype())));
  MF_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status DequantizeBlockwise(const Tensor& q, const Tensor& scale_inv,
                                 const Fp8BlockShape& block, Tensor* x, Stream& stream) {
  constexpr const char* kOp = "DequantizeBlockwise";
  const Device dev = q.device();
  CheckStream(stream, dev, kOp);
  CheckFp8(q, dev, kOp, "q");
  CheckBlocks(q, block, kOp, "q");
  const int64_t m = q.dim(0), n = q.dim(1), bn = n / block.cols;
  CheckIn(scale_inv, dev, DType::kF32, {m / block.rows, bn}, kOp, "scale_inv");
  MF_CHECK(x != nullptr) << kOp << ": x is null";
  CheckActivation(*x, dev, kOp, "x");
  CheckShape(*x, {m, n}, kOp, "x");
  if (m == 0 || n == 0) return absl::OkStatus();
  const int grid = DeviceGrid(m * n, kMaxThreads, kMaxThreads, stream);
  MF_DISPATCH_FLOAT(x->dtype(), kOp, T,
                    DequantizeBlockwiseKernel<T><<<grid, kMaxThreads, 0, Native(stream)>>>(
                        q.data<uint8_t>(), scale_inv.data<float>(), x->data<T>(), m, n, block.rows,
                        block.cols, bn, Format(q.dtype())));
  MF_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

void Fp8UpdateScales(float fp8_max, Tensor* amax, Tensor* history, Tensor* scale, Tensor* scale_inv,
                     Stream& stream) {
  constexpr const char* kOp = "Fp8UpdateScales";
  const Device dev = amax->device();
  CheckStream(stream, dev, kOp);
  MF_CHECK(fp8_max > 0 && fp8_max <= FLT_MAX) << kOp << ": fp8_max " << fp8_max;
  CheckDType(*amax, DType::kF32, kOp, "amax");
  CheckRank(*amax, 1, kOp, "amax");
  const int64_t t = amax->dim(0);
  CheckOut(scale, dev, DType::kF32, {t}, kOp, "scale");
  CheckOut(scale_inv, dev, DType::kF32, {t}, kOp, "scale_inv");
  int64_t length = 0;
  float* ph = nullptr;
  if (history != nullptr) {
    CheckOn(*history, dev, kOp, "history");
    CheckDType(*history, DType::kF32, kOp, "history");
    CheckRank(*history, 2, kOp, "history");
    length = history->dim(0);
    MF_CHECK_GE(length, 1) << kOp << ": an amax history needs at least one row";
    CheckShape(*history, {length, t}, kOp, "history");
    ph = history->data<float>();
  }
  if (t == 0) return;
  const int grid = DeviceGrid(t, kMaxThreads, kMaxThreads, stream);
  UpdateScalesKernel<<<grid, kMaxThreads, 0, Native(stream)>>>(
      fp8_max, amax->data<float>(), ph, length, scale->data<float>(), scale_inv->data<float>(), t);
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
