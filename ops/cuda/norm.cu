// CUDA RMSNorm: one block per row for the forward (plain and fused with the residual add) and for
// d_x; d_w by column blocks summing fixed row chunks, then the chunks in order (deterministic,
// no atomics). Sums in f32; the rounded residual sum is what gets normalised and saved.
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kColumnThreads = 256;
constexpr int kRowChunks = 64;  // d_w partial sums per column

// sum (if non-null) = x + residual, stored in T and then normalised: y = s·rstd·w.
template <typename T>
__global__ void RmsNormForwardKernel(const T* x, const T* residual, const T* w, float eps,
                                     int64_t hidden, T* sum, T* y, float* rstd) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * hidden;
  float sq = 0.0f;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    float v = ToF32(xr[h]);
    if (residual != nullptr) {
      const T s = FromF32<T>(v + ToF32(residual[row * hidden + h]));
      sum[row * hidden + h] = s;
      v = ToF32(s);
    }
    sq += v * v;
  }
  const float r = 1.0f / sqrtf(BlockSum(sq) / static_cast<float>(hidden) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  // Re-read the normalised input: a thread sees its own writes of `sum`.
  const T* src = residual != nullptr ? sum + row * hidden : xr;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    y[row * hidden + h] = FromF32<T>(ToF32(src[h]) * r * ToF32(w[h]));
  }
}

// d_x = r·g·w − (r³/H)·x·⟨g·w, x⟩ per row.
template <typename T>
__global__ void RmsNormBackwardDxKernel(const T* x, const T* w, const float* rstd, const T* d_y,
                                        int64_t hidden, T* d_x) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * hidden;
  const T* gr = d_y + row * hidden;
  float dot = 0.0f;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    dot += ToF32(gr[h]) * ToF32(w[h]) * ToF32(xr[h]);
  }
  dot = BlockSum(dot);
  const float r = rstd[row];
  const float c = r * r * r * dot / static_cast<float>(hidden);
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    d_x[row * hidden + h] = FromF32<T>(r * ToF32(gr[h]) * ToF32(w[h]) - c * ToF32(xr[h]));
  }
}

// partial[chunk, h] = Σ over the chunk's rows of d_y·x·r.
template <typename T>
__global__ void RmsNormBackwardDwPartial(const T* x, const float* rstd, const T* d_y, int64_t rows,
                                         int64_t hidden, float* partial) {
  const int64_t h = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (h >= hidden) return;
  const int64_t chunk = blockIdx.y;
  const int64_t per_chunk = (rows + gridDim.y - 1) / gridDim.y;
  const int64_t begin = chunk * per_chunk;
  const int64_t end = begin + per_chunk < rows ? begin + per_chunk : rows;
  float sum = 0.0f;
  for (int64_t t = begin; t < end; ++t) {
    sum += ToF32(d_y[t * hidden + h]) * ToF32(x[t * hidden + h]) * rstd[t];
  }
  partial[chunk * hidden + h] = sum;
}

__global__ void AddChunks(const float* partial, int chunks, int64_t hidden, float* d_w) {
  const int64_t h = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (h >= hidden) return;
  float sum = 0.0f;
  for (int c = 0; c < chunks; ++c) sum += partial[c * hidden + h];
  d_w[h] += sum;
}

void CheckForward(const Tensor& x, const Tensor& w, const Tensor* y, const Tensor* rstd,
                  const Stream& stream, const char* op) {
  const Device dev = x.device();
  CheckStream(stream, dev, op);
  CheckActivation(x, dev, op, "x");
  CheckRank(x, 2, op, "x");
  CheckOn(w, dev, op, "w");
  CheckDType(w, x.dtype(), op, "w");
  CheckShape(w, {x.dim(1)}, op, "w");
  CheckOut(y, dev, x.dtype(), x.shape(), op, "y");
  CheckOut(rstd, dev, DType::kF32, {x.dim(0)}, op, "rstd");
}

}  // namespace

void RmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y, Tensor* rstd,
                    Stream& stream) {
  constexpr const char* kOp = "RmsNormForward";
  CheckForward(x, w, y, rstd, stream, kOp);
  const int64_t rows = x.dim(0), hidden = x.dim(1);
  if (rows == 0) return;
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T,
                    RmsNormForwardKernel<T>
                    <<<static_cast<unsigned>(rows), kThreads, 0, Native(stream)>>>(
                        x.data<T>(), nullptr, w.data<T>(), eps, hidden, nullptr, y->data<T>(),
                        rstd->data<float>()));
  MF_CUDA_CHECK_LAUNCH();
}

void AddRmsNormForward(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                       Tensor* sum, Tensor* y, Tensor* rstd, Stream& stream) {
  constexpr const char* kOp = "AddRmsNormForward";
  CheckForward(x, w, y, rstd, stream, kOp);
  CheckOn(residual, x.device(), kOp, "residual");
  CheckDType(residual, x.dtype(), kOp, "residual");
  CheckShape(residual, x.shape(), kOp, "residual");
  CheckOut(sum, x.device(), x.dtype(), x.shape(), kOp, "sum");
  const int64_t rows = x.dim(0), hidden = x.dim(1);
  if (rows == 0) return;
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T,
                    RmsNormForwardKernel<T>
                    <<<static_cast<unsigned>(rows), kThreads, 0, Native(stream)>>>(
                        x.data<T>(), residual.data<T>(), w.data<T>(), eps, hidden, sum->data<T>(),
                        y->data<T>(), rstd->data<float>()));
  MF_CUDA_CHECK_LAUNCH();
}

void RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& d_y,
                     Tensor* d_x, Tensor* d_w, Stream& stream) {
  constexpr const char* kOp = "RmsNormBackward";
  const Device dev = x.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(x, dev, kOp, "x");
  CheckRank(x, 2, kOp, "x");
  const int64_t rows = x.dim(0), hidden = x.dim(1);
  CheckOn(w, dev, kOp, "w");
  CheckDType(w, x.dtype(), kOp, "w");
  CheckShape(w, {hidden}, kOp, "w");
  CheckOn(rstd, dev, kOp, "rstd");
  CheckDType(rstd, DType::kF32, kOp, "rstd");
  CheckShape(rstd, {rows}, kOp, "rstd");
  CheckOn(d_y, dev, kOp, "d_y");
  CheckDType(d_y, x.dtype(), kOp, "d_y");
  CheckShape(d_y, x.shape(), kOp, "d_y");
  if (d_x != nullptr) CheckOut(d_x, dev, x.dtype(), x.shape(), kOp, "d_x");
  if (d_w != nullptr) CheckOut(d_w, dev, DType::kF32, {hidden}, kOp, "d_w");
  if (rows == 0 || hidden == 0) return;
  const cudaStream_t s = Native(stream);
  if (d_x != nullptr) {
    MF_DISPATCH_FLOAT(
        x.dtype(), kOp, T,
        RmsNormBackwardDxKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
            x.data<T>(), w.data<T>(), rstd.data<float>(), d_y.data<T>(), hidden, d_x->data<T>()));
    MF_CUDA_CHECK_LAUNCH();
  }
  if (d_w != nullptr) {
    const int chunks = static_cast<int>(rows < kRowChunks ? rows : kRowChunks);
    Tensor partial = Scratch({chunks, hidden}, DType::kF32, stream);
    const dim3 grid(static_cast<unsigned>((hidden + kColumnThreads - 1) / kColumnThreads),
                    static_cast<unsigned>(chunks));
    MF_DISPATCH_FLOAT(
        x.dtype(), kOp, T,
        RmsNormBackwardDwPartial<T><<<grid, kColumnThreads, 0, s>>>(
            x.data<T>(), rstd.data<float>(), d_y.data<T>(), rows, hidden, partial.data<float>()));
    MF_CUDA_CHECK_LAUNCH();
    AddChunks<<<grid.x, kColumnThreads, 0, s>>>(partial.data<float>(), chunks, hidden,
                                                d_w->data<float>());
    MF_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace moefold::ops::cuda
