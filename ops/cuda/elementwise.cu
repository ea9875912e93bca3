// CUDA element-wise ops: residual add, axpy (mixed f32/bf16 source and destination), scale.
// Outputs may alias inputs: each thread reads its element before writing it.
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void AddKernel(const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = FromF32<T>(ToF32(a[i]) + ToF32(b[i]));
  }
}

template <typename S, typename D>
__global__ void AxpyKernel(float alpha, const S* src, D* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = FromF32<D>(ToF32(dst[i]) + alpha * ToF32(src[i]));
  }
}

template <typename T>
__global__ void ScaleKernel(float alpha, T* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = FromF32<T>(alpha * ToF32(x[i]));
  }
}

}  // namespace

void Add(const Tensor& a, const Tensor& b, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "Add";
  const Device dev = a.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(a, dev, kOp, "a");
  CheckOn(b, dev, kOp, "b");
  CheckDType(b, a.dtype(), kOp, "b");
  CheckShape(b, a.shape(), kOp, "b");
  CheckOut(out, dev, a.dtype(), a.shape(), kOp, "out");
  const int64_t n = a.numel();
  if (n == 0) return;
  MF_DISPATCH_FLOAT(a.dtype(), kOp, T,
                    AddKernel<T><<<GridFor(n, kThreads), kThreads, 0, Native(stream)>>>(
                        a.data<T>(), b.data<T>(), out->data<T>(), n));
  MF_CUDA_CHECK_LAUNCH();
}

void Axpy(float alpha, const Tensor& src, Tensor* dst, Stream& stream) {
  constexpr const char* kOp = "Axpy";
  MF_CHECK(dst != nullptr) << kOp << ": output dst is null";
  const Device dev = dst->device();
  CheckStream(stream, dev, kOp);
  CheckActivation(src, dev, kOp, "src");
  CheckActivation(*dst, dev, kOp, "dst");
  MF_CHECK_EQ(src.numel(), dst->numel())
      << kOp << ": src " << src.DebugString() << " vs dst " << dst->DebugString();
  const int64_t n = src.numel();
  if (n == 0) return;
  const int grid = GridFor(n, kThreads);
  MF_DISPATCH_FLOAT(src.dtype(), kOp, S,
                    MF_DISPATCH_FLOAT(dst->dtype(), kOp, D,
                                      AxpyKernel<S, D><<<grid, kThreads, 0, Native(stream)>>>(
                                          alpha, src.data<S>(), dst->data<D>(), n)));
  MF_CUDA_CHECK_LAUNCH();
}

void Scale(float alpha, Tensor* x, Stream& stream) {
  constexpr const char* kOp = "Scale";
  MF_CHECK(x != nullptr) << kOp << ": x is null";
  CheckStream(stream, x->device(), kOp);
  CheckActivation(*x, x->device(), kOp, "x");
  const int64_t n = x->numel();
  if (n == 0) return;
  MF_DISPATCH_FLOAT(x->dtype(), kOp, T,
                    ScaleKernel<T><<<GridFor(n, kThreads), kThreads, 0, Native(stream)>>>(
                        alpha, x->data<T>(), n));
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
