// CUDA element-wise ops: residual add and scale.
// 16-byte packs when every pointer is aligned (the last n mod N elements by a scalar launch),
// single elements otherwise; f32 math and one rounding per element either way. Outputs may alias
// inputs: each element is read and then written by the same thread.
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
__global__ void AddKernel(const T* a, const T* b, T* out, int64_t packs) {
  struct In {
    Pack<T, N> a, b;
  };
  ForEachPack(
      FirstThread(), packs, GridThreads(),
      [&](int64_t i) {
        return In{LoadPack<N>(a + i * N), LoadPack<N>(b + i * N)};
      },
      [&](int64_t i, const In& in) {
        Pack<T, N> o;
#pragma unroll
        for (int e = 0; e < N; ++e) o.v[e] = FromF32<T>(ToF32(in.a.v[e]) + ToF32(in.b.v[e]));
        StorePack<N>(out + i * N, o);
      });
}

template <typename T, int N>
__global__ void ScaleKernel(float alpha, T* x, int64_t packs) {
  ForEachPack(
      FirstThread(), packs, GridThreads(), [&](int64_t i) { return LoadPack<N>(x + i * N); },
      [&](int64_t i, const Pack<T, N>& in) {
        Pack<T, N> o;
#pragma unroll
        for (int e = 0; e < N; ++e) o.v[e] = FromF32<T>(alpha * ToF32(in.v[e]));
        StorePack<N>(x + i * N, o);
      });
}

}  // namespace

void Add(const Tensor& a, const Tensor& b, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "Add";
  const Device dev = a.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(a, dev, kOp, "a");
  CheckIn(b, dev, a.dtype(), a.shape(), kOp, "b");
  CheckOut(out, dev, a.dtype(), a.shape(), kOp, "out");
  const int64_t n = a.numel();
  if (n == 0) return;
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(a.dtype(), kOp, T, {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out->data<T>();
    ForBodyAndTail<kVecWidth<T>>(n, VectorAligned<T>({pa, pb, po}, 0),
                                 [&](auto width, int64_t offset, int64_t count) {
                                   constexpr int N = decltype(width)::value;
                                   const int64_t packs = count / N;
                                   AddKernel<T, N>
                                       <<<PackGrid(packs, kThreads, stream), kThreads, 0, s>>>(
                                           pa + offset, pb + offset, po + offset, packs);
                                   MF_CUDA_CHECK_LAUNCH();
                                 });
  });
}

void Scale(float alpha, Tensor* x, Stream& stream) {
  constexpr const char* kOp = "Scale";
  MF_CHECK(x != nullptr) << kOp << ": x is null";
  CheckStream(stream, x->device(), kOp);
  CheckActivation(*x, x->device(), kOp, "x");
  const int64_t n = x->numel();
  if (n == 0) return;
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(x->dtype(), kOp, T, {
    T* px = x->data<T>();
    ForBodyAndTail<kVecWidth<T>>(
        n, VectorAligned<T>({px}, 0), [&](auto width, int64_t offset, int64_t count) {
          constexpr int N = decltype(width)::value;
          const int64_t packs = count / N;
          ScaleKernel<T, N>
              <<<PackGrid(packs, kThreads, stream), kThreads, 0, s>>>(alpha, px + offset, packs);
          MF_CUDA_CHECK_LAUNCH();
        });
  });
}

}  // namespace moefold::ops::cuda
