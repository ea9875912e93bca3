// CUDA reductions: Σx² (f64 partials per block, then one block adds them in block order:
// deterministic on a given device) and max|x| for any floating dtype (NaN propagates). Elements
// move in 16-byte packs when x is aligned (the last n mod N elements join block 0's partial),
// single elements otherwise. SumOfSquares and Amax return host values, so they wait for the
// stream; SumOfSquaresInto adds into a device accumulator and does not.
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

// Each thread's share: packs i = thread, thread + stride, ... of n / N, plus (block 0) one tail
// element each of the last n mod N. `add(v)` sees every element of the share once.
template <int N, typename T, typename Add>
__device__ __forceinline__ void ForEachShare(const T* x, int64_t n, Add add) {
  const int64_t packs = n / N;
  ForEachPack(
      FirstThread(), packs, GridThreads(), [&](int64_t i) { return LoadPack<N>(x + i * N); },
      [&](int64_t, const Pack<T, N>& p) {
#pragma unroll
        for (int e = 0; e < N; ++e) add(ToF32(p.v[e]));
      });
  if (blockIdx.x == 0 && packs * N + threadIdx.x < n) add(ToF32(x[packs * N + threadIdx.x]));
}

template <typename T, int N>
__global__ void SumSquaresPartials(const T* x, int64_t n, double* partials) {
  double sum = 0;
  ForEachShare<N>(x, n, [&](float v) {
    const double d = v;
    sum += d * d;
  });
  sum = BlockSum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// One block adds the partials in a fixed order: *out = Σ (or *out += Σ with kAccumulate).
template <bool kAccumulate>
__global__ void SumPartials(const double* partials, int count, double* out) {
  double sum = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partials[i];
  sum = BlockSum(sum);
  if (threadIdx.x == 0) *out = kAccumulate ? *out + sum : sum;
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

template <typename T, int N>
__global__ void AmaxPartials(const T* x, int64_t n, float* partials) {
  float m = 0.0f;
  ForEachShare<N>(x, n, [&](float v) { m = NanMax(m, fabsf(v)); });
  m = BlockNanMax(m);
  if (threadIdx.x == 0) partials[blockIdx.x] = m;
}

__global__ void MaxPartials(const float* partials, int count, float* out) {
  float m = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) m = NanMax(m, partials[i]);
  m = BlockNanMax(m);
  if (threadIdx.x == 0) *out = m;
}

// Blocks for n elements in packs of `width`: enough for the packs, at most what the device holds
// at once and kMaxBlocks; at least kThreads threads in block 0 cover the tail (< width elements).
int ReduceGrid(int64_t n, int width, const Stream& stream) {
  const int blocks = PackGrid(n / width, kThreads, stream);
  return blocks < kMaxBlocks ? blocks : kMaxBlocks;
}

// Launches the partial-sum kernel of Σx² into partials[0, blocks); returns blocks.
int LaunchSumSquares(const Tensor& x, double* partials, int max_blocks, Stream& stream,
                     const char* op) {
  const int64_t n = x.numel();
  int blocks = 0;
  MF_DISPATCH_FLOAT(x.dtype(), op, T, {
    const T* px = x.data<T>();
    WithPackWidth<T>({px}, 0, [&](auto width) {
      constexpr int N = decltype(width)::value;
      blocks = ReduceGrid(n, N, stream);
      MF_CHECK_LE(blocks, max_blocks);
      SumSquaresPartials<T, N><<<blocks, kThreads, 0, Native(stream)>>>(px, n, partials);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
  return blocks;
}

template <typename T>
int LaunchAmax(const T* x, int64_t n, float* partials, Stream& stream) {
  int blocks = 0;
  WithPackWidth<T>({x}, 0, [&](auto width) {
    constexpr int N = decltype(width)::value;
    blocks = ReduceGrid(n, N, stream);
    AmaxPartials<T, N><<<blocks, kThreads, 0, Native(stream)>>>(x, n, partials);
    MF_CUDA_CHECK_LAUNCH();
  });
  return blocks;
}

}  // namespace

double SumOfSquares(const Tensor& x, Stream& stream) {
  constexpr const char* kOp = "SumOfSquares";
  CheckStream(stream, x.device(), kOp);
  CheckActivation(x, x.device(), kOp, "x");
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  Tensor partials = Scratch({kMaxBlocks + 1}, DType::kI64, stream);  // f64 storage
  double* p = static_cast<double*>(partials.raw_data());
  const int blocks = LaunchSumSquares(x, p, kMaxBlocks, stream, kOp);
  SumPartials<false><<<1, kThreads, 0, Native(stream)>>>(p, blocks, p + kMaxBlocks);
  MF_CUDA_CHECK_LAUNCH();
  double result = 0;
  MF_CUDA_CHECK(cudaMemcpyAsync(&result, p + kMaxBlocks, sizeof(double), cudaMemcpyDeviceToHost,
                                Native(stream)));
  MF_CUDA_CHECK(cudaStreamSynchronize(Native(stream)));
  return result;
}

void SumOfSquaresInto(const Tensor& x, Tensor* acc, Stream& stream) {
  constexpr const char* kOp = "SumOfSquaresInto";
  CheckStream(stream, x.device(), kOp);
  CheckActivation(x, x.device(), kOp, "x");
  CheckOut(acc, x.device(), DType::kI64, {1}, kOp, "acc");
  const int64_t n = x.numel();
  if (n == 0) return;
  Tensor partials = Scratch({kMaxBlocks}, DType::kI64, stream);  // f64 storage
  double* p = static_cast<double*>(partials.raw_data());
  const int blocks = LaunchSumSquares(x, p, kMaxBlocks, stream, kOp);
  SumPartials<true>
      <<<1, kThreads, 0, Native(stream)>>>(p, blocks, static_cast<double*>(acc->raw_data()));
  MF_CUDA_CHECK_LAUNCH();
}

float Amax(const Tensor& x, Stream& stream) {
  constexpr const char* kOp = "Amax";
  CheckStream(stream, x.device(), kOp);
  CheckOn(x, x.device(), kOp, "x");
  MF_CHECK(IsFloatingPoint(x.dtype()))
      << kOp << ": x must be a floating dtype, got " << x.DebugString();
  const int64_t n = x.numel();
  if (n == 0) return 0.0f;
  Tensor partials = Scratch({kMaxBlocks + 1}, DType::kF32, stream);
  float* p = partials.data<float>();
  const cudaStream_t s = Native(stream);
  const void* data = x.raw_data();
  int blocks = 0;
  switch (x.dtype()) {
    case DType::kF32:
      blocks = LaunchAmax(static_cast<const float*>(data), n, p, stream);
      break;
    case DType::kBF16:
      blocks = LaunchAmax(static_cast<const bf16*>(data), n, p, stream);
      break;
    case DType::kF16:
      blocks = LaunchAmax(static_cast<const __half*>(data), n, p, stream);
      break;
    case DType::kFp8E4M3:
      blocks = LaunchAmax(static_cast<const __nv_fp8_e4m3*>(data), n, p, stream);
      break;
    case DType::kFp8E5M2:
      blocks = LaunchAmax(static_cast<const __nv_fp8_e5m2*>(data), n, p, stream);
      break;
    default:
      MF_CHECK(false) << kOp << ": unsupported dtype";
  }
  MaxPartials<<<1, kThreads, 0, s>>>(p, blocks, p + kMaxBlocks);
  MF_CUDA_CHECK_LAUNCH();
  float result = 0;
  MF_CUDA_CHECK(cudaMemcpyAsync(&result, p + kMaxBlocks, sizeof(float), cudaMemcpyDeviceToHost, s));
  MF_CUDA_CHECK(cudaStreamSynchronize(s));
  return result;
}

}  // namespace moefold::ops::cuda
