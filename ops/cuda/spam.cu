// CUDA SPAM gradient transforms. Statistics: one block per segment walks its elements (f32 per
// thread, then a fixed tree: deterministic on a device); the clip-and-scale: a 2-D grid, segments
// along x and chunks of a segment along y; the spike clip: a grid-stride loop. The element math is
// the CPU reference's, one IEEE operation at a time (no FMA contraction). The segment ranges are
// trusted (built and checked on the host).
#include <cstdint>

#include "ops/cuda/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxChunks = 1024;  // blocks per segment of the clip-and-scale

__device__ __forceinline__ float Clip(float g, float c, float f) {
  return fabsf(g) > c ? __fmul_rn(g, f) : g;
}

// Max over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// fmaxf drops NaN operands, so a NaN gradient shows in the sum rather than in the max.
__device__ float BlockMax(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) {
    total = fmaxf(total, __shfl_xor_sync(0xffffffffu, total, offset));
  }
  return total;
}

__global__ void SegmentStatsKernel(const float* g, const float* grad_scale, const int64_t* segments,
                                   const float* clip, float* stats) {
  const int64_t k = blockIdx.x;
  const float scale = *grad_scale;
  const float c = clip != nullptr ? clip[2 * k] : INFINITY;
  const float f = clip != nullptr ? clip[2 * k + 1] : 1.0f;
  float max_abs = 0, sum = 0;
  for (int64_t i = segments[2 * k] + threadIdx.x; i < segments[2 * k + 1]; i += blockDim.x) {
    const float x = Clip(__fmul_rn(g[i], scale), c, f);
    max_abs = fmaxf(max_abs, fabsf(x));
    sum = __fadd_rn(sum, __fmul_rn(x, x));
  }
  max_abs = BlockMax(max_abs);
  sum = BlockSum(sum);
  if (threadIdx.x == 0) {
    stats[2 * k] = max_abs;
    stats[2 * k + 1] = sum;
  }
}

__global__ void SegmentClipScaleKernel(const int64_t* segments, const float* factors,
                                       const float* grad_scale, float* g) {
  const int64_t k = blockIdx.x;
  const float scale = *grad_scale;
  const float c = factors[3 * k], f = factors[3 * k + 1], a = factors[3 * k + 2];
  const int64_t stride = int64_t{gridDim.y} * blockDim.x;
  for (int64_t i = segments[2 * k] + blockIdx.y * int64_t{blockDim.x} + threadIdx.x;
       i < segments[2 * k + 1]; i += stride) {
    g[i] = __fmul_rn(Clip(__fmul_rn(g[i], scale), c, f), a);
  }
}

__global__ void SpikeClipKernel(const float* grad_scale, const float* v, float theta, float* g,
                                int64_t n) {
  const float scale = *grad_scale;
  for (int64_t i = FirstThread(); i < n; i += GridThreads()) {
    const float x = __fmul_rn(g[i], scale);
    const float limit = __fmul_rn(theta, v[i]);
    g[i] = theta > 0 && __fmul_rn(x, x) > limit ? copysignf(__fsqrt_rn(limit), x) : x;
  }
}

// segments (S, 2) i64 on dev; returns S.
int64_t CheckSegments(const Tensor& segments, const Device& dev, const char* op) {
  CheckOn(segments, dev, op, "segments");
  CheckDType(segments, DType::kI64, op, "segments");
  CheckRank(segments, 2, op, "segments");
  MF_CHECK_EQ(segments.dim(1), 2) << op << ": segments " << segments.DebugString();
  return segments.dim(0);
}

}  // namespace

void SegmentGradStats(const Tensor& grad, const Tensor& grad_scale, const Tensor& segments,
                      const Tensor& clip, Tensor* stats, Stream& stream) {
  constexpr const char* kOp = "SegmentGradStats";
  const Device dev = grad.device();
  CheckStream(stream, dev, kOp);
  CheckOn(grad, dev, kOp, "grad");
  CheckDType(grad, DType::kF32, kOp, "grad");
  CheckIn(grad_scale, dev, DType::kF32, {1}, kOp, "grad_scale");
  const int64_t num = CheckSegments(segments, dev, kOp);
  if (clip.defined()) CheckIn(clip, dev, DType::kF32, {num, 2}, kOp, "clip");
  CheckOut(stats, dev, DType::kF32, {num, 2}, kOp, "stats");
  if (num == 0) return;
  SegmentStatsKernel<<<static_cast<unsigned>(num), kThreads, 0, Native(stream)>>>(
      grad.data<float>(), grad_scale.data<float>(), segments.data<int64_t>(),
      clip.defined() ? clip.data<float>() : nullptr, stats->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void SegmentClipScale(const Tensor& segments, const Tensor& factors, const Tensor& grad_scale,
                      Tensor* grad, Stream& stream) {
  constexpr const char* kOp = "SegmentClipScale";
  const Device dev = grad->device();
  CheckStream(stream, dev, kOp);
  CheckOn(*grad, dev, kOp, "grad");
  CheckDType(*grad, DType::kF32, kOp, "grad");
  CheckIn(grad_scale, dev, DType::kF32, {1}, kOp, "grad_scale");
  const int64_t num = CheckSegments(segments, dev, kOp);
  CheckIn(factors, dev, DType::kF32, {num, 3}, kOp, "factors");
  if (num == 0) return;
  // Chunks per segment from the buffer's size: the grid stays the same however the elements split
  // among segments (each block loops over its share, so any count is correct).
  const int64_t per_segment = (grad->numel() / num + kThreads - 1) / kThreads;
  const unsigned chunks =
      static_cast<unsigned>(per_segment < 1 ? 1 : per_segment > kMaxChunks ? kMaxChunks : per_segment);
  SegmentClipScaleKernel<<<dim3(static_cast<unsigned>(num), chunks), kThreads, 0,
                           Native(stream)>>>(segments.data<int64_t>(), factors.data<float>(),
                                             grad_scale.data<float>(), grad->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void SpamSpikeClip(const Tensor& grad_scale, const Tensor& v, float theta, Tensor* grad,
                   Stream& stream) {
  constexpr const char* kOp = "SpamSpikeClip";
  const Device dev = grad->device();
  CheckStream(stream, dev, kOp);
  CheckOn(*grad, dev, kOp, "grad");
  CheckDType(*grad, DType::kF32, kOp, "grad");
  CheckOn(v, dev, kOp, "v");
  CheckDType(v, DType::kF32, kOp, "v");
  MF_CHECK_EQ(v.numel(), grad->numel()) << kOp << ": v " << v.DebugString();
  CheckIn(grad_scale, dev, DType::kF32, {1}, kOp, "grad_scale");
  const int64_t n = grad->numel();
  if (n == 0) return;
  SpikeClipKernel<<<DeviceGrid(n, kThreads, kThreads, stream), kThreads, 0, Native(stream)>>>(
      grad_scale.data<float>(), v.data<float>(), theta, grad->data<float>(), n);
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
