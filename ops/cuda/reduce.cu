// CUDA reductions: Σx² (f64 partials per block, summed in block order: deterministic) and max|x|
// for any floating dtype (NaN propagates). Both return host values, so they wait for the stream.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

__device__ __forceinline__ float Load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float Load(const bf16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float Load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float Load(const __nv_fp8_e4m3* p, int64_t i) {
  return static_cast<float>(p[i]);
}
__device__ __forceinline__ float Load(const __nv_fp8_e5m2* p, int64_t i) {
  return static_cast<float>(p[i]);
}

template <typename T>
__global__ void SumSquaresPartials(const T* x, int64_t n, double* partials) {
  double sum = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const double v = Load(x, i);
    sum += v * v;
  }
  sum = BlockSum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// One block adds the partials in a fixed order.
__global__ void SumPartials(const double* partials, int count, double* out) {
  double sum = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partials[i];
  sum = BlockSum(sum);
  if (threadIdx.x == 0) *out = sum;
}

__device__ __forceinline__ float NanMax(float a, float b) {
  return (a != a || b != b) ? __int_as_float(0x7fc00000) : fmaxf(a, b);
}

__device__ float BlockNanMax(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = NanMax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = NanMax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

template <typename T>
__global__ void AmaxPartials(const T* x, int64_t n, float* partials) {
  float m = 0.0f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    m = NanMax(m, fabsf(Load(x, i)));
  }
  m = BlockNanMax(m);
  if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

__global__ void MaxPartials(const float* partials, int count, float* out) {
  float m = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) m = NanMax(m, partials[i]);
  m = BlockNanMax(m);
  if (threadIdx.x == 0) *out = m;
}

}  // namespace

double SumOfSquares(const Tensor& x, Stream& stream) {
  constexpr const char* kOp = "SumOfSquares";
  CheckStream(stream, x.device(), kOp);
  CheckActivation(x, x.device(), kOp, "x");
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const int blocks = GridFor(n, kThreads, kMaxBlocks);
  Tensor partials = Scratch({blocks + 1}, DType::kI64, stream);  // f64 storage
  double* p = static_cast<double*>(partials.raw_data());
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T,
                    SumSquaresPartials<T>
                    <<<blocks, kThreads, 0, Native(stream)>>>(x.data<T>(), n, p));
  MF_CUDA_CHECK_LAUNCH();
  SumPartials<<<1, kThreads, 0, Native(stream)>>>(p, blocks, p + blocks);
  MF_CUDA_CHECK_LAUNCH();
  double result = 0;
  MF_CUDA_CHECK(
      cudaMemcpyAsync(&result, p + blocks, sizeof(double), cudaMemcpyDeviceToHost, Native(stream)));
  MF_CUDA_CHECK(cudaStreamSynchronize(Native(stream)));
  return result;
}

float Amax(const Tensor& x, Stream& stream) {
  constexpr const char* kOp = "Amax";
  CheckStream(stream, x.device(), kOp);
  CheckOn(x, x.device(), kOp, "x");
  MF_CHECK(IsFloatingPoint(x.dtype()))
      << kOp << ": x must be a floating dtype, got " << x.DebugString();
  const int64_t n = x.numel();
  if (n == 0) return 0.0f;
  const int blocks = GridFor(n, kThreads, kMaxBlocks);
  Tensor partials = Scratch({blocks + 1}, DType::kF32, stream);
  float* p = partials.data<float>();
  const cudaStream_t s = Native(stream);
  const void* data = x.raw_data();
  switch (x.dtype()) {
    case DType::kF32:
      AmaxPartials<<<blocks, kThreads, 0, s>>>(static_cast<const float*>(data), n, p);
      break;
    case DType::kBF16:
      AmaxPartials<<<blocks, kThreads, 0, s>>>(static_cast<const bf16*>(data), n, p);
      break;
    case DType::kF16:
      AmaxPartials<<<blocks, kThreads, 0, s>>>(static_cast<const __half*>(data), n, p);
      break;
    case DType::kFp8E4M3:
      AmaxPartials<<<blocks, kThreads, 0, s>>>(static_cast<const __nv_fp8_e4m3*>(data), n, p);
      break;
    case DType::kFp8E5M2:
      AmaxPartials<<<blocks, kThreads, 0, s>>>(static_cast<const __nv_fp8_e5m2*>(data), n, p);
      break;
    default:
      MF_CHECK(false) << kOp << ": unsupported dtype";
  }
  MF_CUDA_CHECK_LAUNCH();
  MaxPartials<<<1, kThreads, 0, s>>>(p, blocks, p + blocks);
  MF_CUDA_CHECK_LAUNCH();
  float result = 0;
  MF_CUDA_CHECK(cudaMemcpyAsync(&result, p + blocks, sizeof(float), cudaMemcpyDeviceToHost, s));
  MF_CUDA_CHECK(cudaStreamSynchronize(s));
  return result;
}

}  // namespace moefold::ops::cuda
