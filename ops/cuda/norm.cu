// CUDA RMSNorm: one warp per row for the forward (plain and fused with the residual add) and for
// d_x (overwritten or accumulated); d_w by column packs summing fixed row chunks, then the chunks
// in order (deterministic, no atomics). Rows move in 16-byte packs when pointers and H allow,
// single elements otherwise. Sums in f32; the rounded residual sum is what gets normalised and
// saved.
#include <algorithm>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/rms_norm_row.cuh"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kRowWarps = 8;  // rows in flight per block, one per warp
constexpr int kRowThreads = 32 * kRowWarps;
constexpr int kColumnThreads = 256;
// d_w partial sums: chunks of about kChunkRows rows (at most kMaxChunks chunks), fixed by the shape
// alone so the summation order does not depend on the device.
constexpr int64_t kChunkRows = 32;
constexpr int64_t kMaxChunks = 1024;

__device__ __forceinline__ int Lane() { return threadIdx.x % 32; }
__device__ __forceinline__ int64_t FirstRow() {
  return blockIdx.x * int64_t{kRowWarps} + threadIdx.x / 32;
}
__device__ __forceinline__ int64_t RowStride() { return int64_t{gridDim.x} * kRowWarps; }

template <typename T, int N>
struct Two {
  Pack<T, N> a, b;
};
template <typename T, int N>
struct Three {
  Pack<T, N> a, b, c;
};
template <typename T, int N>
struct Four {
  Pack<T, N> a, b, c, d;
};

// sum (if residual is non-null) = x + residual, stored in T and then normalised: y = s·rstd·w.
template <typename T, int N>
__global__ void RmsNormForwardKernel(const T* x, const T* residual, const T* w, float eps,
                                     int64_t rows, int64_t hidden, T* sum, T* y, float* rstd) {
  const int64_t packs = hidden / N;
  for (int64_t row = FirstRow(); row < rows; row += RowStride()) {
    const T* xr = x + row * hidden;
    float sq = 0.0f;
    if (residual == nullptr) {
      sq = LaneSumSquares<T, N>(xr, packs);
    } else {
      sq = LaneAddSumSquares<T, N>(xr, residual + row * hidden, sum + row * hidden, packs);
    }
    const float r = RstdFromLaneSums(sq, hidden, eps);
    if (Lane() == 0) rstd[row] = r;
    // The second pass re-reads the normalised input (from L1/L2): a lane reads back exactly the
    // packs of `sum` it wrote itself, so it sees its own writes.
    const T* src = residual != nullptr ? sum + row * hidden : xr;
    T* yr = y + row * hidden;
    ForEachPack(
        Lane(), packs, 32,
        [&](int64_t i) {
          return Two<T, N>{LoadPack<N>(src + i * N), LoadPack<N>(w + i * N)};
        },
        [&](int64_t i, const Two<T, N>& in) {
          Pack<T, N> out;
#pragma unroll
          for (int e = 0; e < N; ++e)
            out.v[e] = FromF32<T>(ToF32(in.a.v[e]) * r * ToF32(in.b.v[e]));
          StorePack<N>(yr + i * N, out);
        });
  }
}

// d_x = r·g·w − (r³/H)·x·⟨g·w, x⟩ per row; with kAccumulate added to d_x in f32, rounded once.
template <typename T, int N, bool kAccumulate>
__global__ void RmsNormBackwardDxKernel(const T* x, const T* w, const float* rstd, const T* d_y,
                                        int64_t rows, int64_t hidden, T* d_x) {
  const int64_t packs = hidden / N;
  for (int64_t row = FirstRow(); row < rows; row += RowStride()) {
    const T* xr = x + row * hidden;
    const T* gr = d_y + row * hidden;
    T* dxr = d_x + row * hidden;
    float dot = 0.0f;
    ForEachPack<kPacksInFlightWide>(
        Lane(), packs, 32,
        [&](int64_t i) {
          return Three<T, N>{LoadPack<N>(gr + i * N), LoadPack<N>(w + i * N),
                             LoadPack<N>(xr + i * N)};
        },
        [&](int64_t, const Three<T, N>& in) {
#pragma unroll
          for (int e = 0; e < N; ++e) dot += ToF32(in.a.v[e]) * ToF32(in.b.v[e]) * ToF32(in.c.v[e]);
        });
    dot = WarpSum(dot);
    const float r = rstd[row];
    const float c = r * r * r * dot / static_cast<float>(hidden);
    ForEachPack<kPacksInFlightWide>(
        Lane(), packs, 32,
        [&](int64_t i) {
          Four<T, N> in{LoadPack<N>(gr + i * N), LoadPack<N>(w + i * N), LoadPack<N>(xr + i * N)};
          if (kAccumulate) in.d = LoadPack<N>(dxr + i * N);
          return in;
        },
        [&](int64_t i, const Four<T, N>& in) {
          Pack<T, N> out;
#pragma unroll
          for (int e = 0; e < N; ++e) {
            const float value = r * ToF32(in.a.v[e]) * ToF32(in.b.v[e]) - c * ToF32(in.c.v[e]);
            out.v[e] = FromF32<T>(kAccumulate ? ToF32(in.d.v[e]) + value : value);
          }
          StorePack<N>(dxr + i * N, out);
        });
  }
}

// partial[chunk, h] = Σ over the chunk's rows, in row order, of d_y·x·r; a thread owns one pack of
// N columns.
template <typename T, int N>
__global__ void RmsNormBackwardDwPartial(const T* x, const float* rstd, const T* d_y, int64_t rows,
                                         int64_t hidden, int64_t per_chunk, float* partial) {
  const int64_t column = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) * N;
  if (column >= hidden) return;
  const int64_t begin = blockIdx.y * per_chunk;
  const int64_t end = begin + per_chunk < rows ? begin + per_chunk : rows;
  struct Row {
    Pack<T, N> g, x;
    float r;
  };
  float sum[N];
#pragma unroll
  for (int e = 0; e < N; ++e) sum[e] = 0.0f;
  ForEachPack(
      begin, end, 1,
      [&](int64_t t) {
        return Row{LoadPack<N>(d_y + t * hidden + column), LoadPack<N>(x + t * hidden + column),
                   rstd[t]};
      },
      [&](int64_t, const Row& in) {
#pragma unroll
        for (int e = 0; e < N; ++e) sum[e] += ToF32(in.g.v[e]) * ToF32(in.x.v[e]) * in.r;
      });
  float* out = partial + blockIdx.y * hidden + column;
#pragma unroll
  for (int e = 0; e < N; ++e) out[e] = sum[e];
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
  CheckIn(w, dev, x.dtype(), {x.dim(1)}, op, "w");
  CheckOut(y, dev, x.dtype(), x.shape(), op, "y");
  CheckOut(rstd, dev, DType::kF32, {x.dim(0)}, op, "rstd");
}

// The forward for both ops (residual and sum null for the plain norm).
void LaunchForward(const Tensor& x, const Tensor* residual, const Tensor& w, float eps, Tensor* sum,
                   Tensor* y, Tensor* rstd, Stream& stream, const char* op) {
  const int64_t rows = x.dim(0), hidden = x.dim(1);
  if (rows == 0) return;
  const int grid = DeviceGrid(rows, kRowWarps, kRowThreads, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(x.dtype(), op, T, {
    const T* px = x.data<T>();
    const T* pr = residual != nullptr ? residual->data<T>() : nullptr;
    T* ps = sum != nullptr ? sum->data<T>() : nullptr;
    const T* pw = w.data<T>();
    T* py = y->data<T>();
    WithPackWidth<T>({px, pr, ps, pw, py}, hidden, [&](auto width) {
      RmsNormForwardKernel<T, decltype(width)::value>
          <<<grid, kRowThreads, 0, s>>>(px, pr, pw, eps, rows, hidden, ps, py, rstd->data<float>());
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

template <typename T, int N>
void LaunchDw(const T* x, const float* rstd, const T* d_y, int64_t rows, int64_t hidden, float* d_w,
              Stream& stream) {
  const int64_t chunks = std::min((rows + kChunkRows - 1) / kChunkRows, kMaxChunks);
  const int64_t per_chunk = (rows + chunks - 1) / chunks;
  Tensor partial = Scratch({chunks, hidden}, DType::kF32, stream);
  const int64_t column_packs = hidden / N;
  const dim3 grid(static_cast<unsigned>((column_packs + kColumnThreads - 1) / kColumnThreads),
                  static_cast<unsigned>(chunks));
  const cudaStream_t s = Native(stream);
  RmsNormBackwardDwPartial<T, N><<<grid, kColumnThreads, 0, s>>>(x, rstd, d_y, rows, hidden,
                                                                 per_chunk, partial.data<float>());
  MF_CUDA_CHECK_LAUNCH();
  AddChunks<<<static_cast<unsigned>((hidden + kColumnThreads - 1) / kColumnThreads), kColumnThreads,
              0, s>>>(partial.data<float>(), static_cast<int>(chunks), hidden, d_w);
  MF_CUDA_CHECK_LAUNCH();
}

void LaunchBackward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& d_y,
                    Tensor* d_x, Tensor* d_w, bool accumulate, Stream& stream, const char* op) {
  const Device dev = x.device();
  CheckStream(stream, dev, op);
  CheckActivation(x, dev, op, "x");
  CheckRank(x, 2, op, "x");
  const int64_t rows = x.dim(0), hidden = x.dim(1);
  CheckIn(w, dev, x.dtype(), {hidden}, op, "w");
  CheckIn(rstd, dev, DType::kF32, {rows}, op, "rstd");
  CheckIn(d_y, dev, x.dtype(), x.shape(), op, "d_y");
  if (d_x != nullptr) CheckOut(d_x, dev, x.dtype(), x.shape(), op, "d_x");
  if (d_w != nullptr) CheckOut(d_w, dev, DType::kF32, {hidden}, op, "d_w");
  if (rows == 0 || hidden == 0) return;
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(x.dtype(), op, T, {
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    const T* pg = d_y.data<T>();
    if (d_x != nullptr) {
      T* pdx = d_x->data<T>();
      const int grid = DeviceGrid(rows, kRowWarps, kRowThreads, stream);
      WithPackWidth<T>({px, pw, pg, pdx}, hidden, [&](auto width) {
        constexpr int N = decltype(width)::value;
        if (accumulate) {
          RmsNormBackwardDxKernel<T, N, true>
              <<<grid, kRowThreads, 0, s>>>(px, pw, rstd.data<float>(), pg, rows, hidden, pdx);
        } else {
          RmsNormBackwardDxKernel<T, N, false>
              <<<grid, kRowThreads, 0, s>>>(px, pw, rstd.data<float>(), pg, rows, hidden, pdx);
        }
        MF_CUDA_CHECK_LAUNCH();
      });
    }
    if (d_w != nullptr) {
      WithPackWidth<T>({px, pg}, hidden, [&](auto width) {
        LaunchDw<T, decltype(width)::value>(px, rstd.data<float>(), pg, rows, hidden,
                                            d_w->data<float>(), stream);
      });
    }
  });
}

}  // namespace

void RmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y, Tensor* rstd,
                    Stream& stream) {
  constexpr const char* kOp = "RmsNormForward";
  CheckForward(x, w, y, rstd, stream, kOp);
  LaunchForward(x, nullptr, w, eps, nullptr, y, rstd, stream, kOp);
}

void AddRmsNormForward(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                       Tensor* sum, Tensor* y, Tensor* rstd, Stream& stream) {
  constexpr const char* kOp = "AddRmsNormForward";
  CheckForward(x, w, y, rstd, stream, kOp);
  CheckIn(residual, x.device(), x.dtype(), x.shape(), kOp, "residual");
  CheckOut(sum, x.device(), x.dtype(), x.shape(), kOp, "sum");
  LaunchForward(x, &residual, w, eps, sum, y, rstd, stream, kOp);
}

void RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& d_y,
                     Tensor* d_x, Tensor* d_w, Stream& stream) {
  LaunchBackward(x, w, rstd, d_y, d_x, d_w, /*accumulate=*/false, stream, "RmsNormBackward");
}

void RmsNormBackwardAccumulate(const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream) {
  LaunchBackward(x, w, rstd, d_y, d_x, d_w, /*accumulate=*/true, stream,
                 "RmsNormBackwardAccumulate");
}

}  // namespace moefold::ops::cuda
