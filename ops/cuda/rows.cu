// CUDA row gather and block sum. GatherRows: one warp per output row, 16-byte packs when pointers
// and H allow (single elements otherwise), −1 writes zeros; a bad index traps after printing it.
// FP8 rows move as 4-byte words (bytes where H or the pointers are not aligned to 4).
// SumBlocks: each thread owns output elements and adds the n blocks' values in block order in f32
// (the CPU's order, so the bits agree), rounding once.
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kRowWarps = 8;  // rows in flight per block, one per warp
constexpr int kRowThreads = 32 * kRowWarps;
constexpr int kSumThreads = 256;

// out[r] = index[r] < 0 ? 0 : x[index[r]], one warp per row.
// index[r]: a row of x, or −1 for a zero row; anything else traps, naming the index.
__device__ __forceinline__ int64_t SourceRow(const int32_t* index, int64_t r, int64_t x_rows) {
  const int64_t from = index[r];
  if (from < -1 || from >= x_rows) {
    printf("moefold GatherRows: index[%lld] = %lld outside [-1, %lld)\n",
           static_cast<long long>(r), static_cast<long long>(from),
           static_cast<long long>(x_rows));
    __trap();
  }
  return from;
}

template <typename T, int N>
__global__ void GatherRowsKernel(const T* x, const int32_t* index, int64_t x_rows, int64_t rows,
                                 int64_t hidden, T* out) {
  const int64_t packs = hidden / N;
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * int64_t{kRowWarps} + threadIdx.x / 32; r < rows;
       r += int64_t{gridDim.x} * kRowWarps) {
    const int64_t from = SourceRow(index, r, x_rows);
    T* dst = out + r * hidden;
    if (from < 0) {
      Pack<T, N> zero;
#pragma unroll
      for (int e = 0; e < N; ++e) zero.v[e] = FromF32<T>(0.0f);
      for (int64_t i = lane; i < packs; i += 32) StorePack<N>(dst + i * N, zero);
      continue;
    }
    const T* src = x + from * hidden;
    ForEachPack(
        lane, packs, 32, [&](int64_t i) { return LoadPack<N>(src + i * N); },
        [&](int64_t i, const Pack<T, N>& p) { StorePack<N>(dst + i * N, p); });
  }
}

// GatherRowsKernel for 1-byte rows (FP8 codes), moved as words W of 1 or 4 bytes.
template <typename W>
__global__ void GatherWordsKernel(const W* x, const int32_t* index, int64_t x_rows, int64_t rows,
                                  int64_t words, W* out) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * int64_t{kRowWarps} + threadIdx.x / 32; r < rows;
       r += int64_t{gridDim.x} * kRowWarps) {
    const int64_t from = SourceRow(index, r, x_rows);
    W* dst = out + r * words;
    const W* src = from < 0 ? nullptr : x + from * words;
    for (int64_t i = lane; i < words; i += 32) dst[i] = from < 0 ? W{0} : src[i];
  }
}

// out[i] = Σ_b blocks[b·m + i] in block order, f32, for the packs of N elements of this thread.
template <typename T, int N>
__global__ void SumBlocksKernel(const T* blocks, int64_t n, int64_t m, T* out) {
  const int64_t packs = m / N;
  for (int64_t i = FirstThread(); i < packs; i += GridThreads()) {
    float sum[N];
    PackToF32(LoadPack<N>(blocks + i * N), sum);
    for (int64_t b = 1; b < n; ++b) {
      float v[N];
      PackToF32(LoadPack<N>(blocks + b * m + i * N), v);
#pragma unroll
      for (int e = 0; e < N; ++e) sum[e] += v[e];
    }
    StorePack<N>(out + i * N, PackFromF32<T, N>(sum));
  }
}

}  // namespace

void GatherRows(const Tensor& x, const Tensor& index, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "GatherRows";
  const Device dev = x.device();
  CheckStream(stream, dev, kOp);
  const bool bytes = x.dtype() == DType::kFp8E4M3 || x.dtype() == DType::kFp8E5M2;
  if (!bytes) CheckActivation(x, dev, kOp, "x");
  CheckRank(x, 2, kOp, "x");
  CheckOn(index, dev, kOp, "index");
  CheckDType(index, DType::kI32, kOp, "index");
  CheckRank(index, 1, kOp, "index");
  const int64_t rows = index.numel(), hidden = x.dim(1);
  CheckOut(out, dev, x.dtype(), {rows, hidden}, kOp, "out");
  if (rows == 0 || hidden == 0) return;
  const int grid = DeviceGrid(rows, kRowWarps, kRowThreads, stream);
  const cudaStream_t s = Native(stream);
  if (bytes) {
    const auto* px = static_cast<const uint8_t*>(x.raw_data());
    auto* po = static_cast<uint8_t*>(out->raw_data());
    const int32_t* pi = index.data<int32_t>();
    const bool words = hidden % 4 == 0 && reinterpret_cast<uintptr_t>(px) % 4 == 0 &&
                       reinterpret_cast<uintptr_t>(po) % 4 == 0;
    if (words) {
      GatherWordsKernel<uint32_t><<<grid, kRowThreads, 0, s>>>(
          reinterpret_cast<const uint32_t*>(px), pi, x.dim(0), rows, hidden / 4,
          reinterpret_cast<uint32_t*>(po));
    } else {
      GatherWordsKernel<uint8_t><<<grid, kRowThreads, 0, s>>>(px, pi, x.dim(0), rows, hidden, po);
    }
    MF_CUDA_CHECK_LAUNCH();
    return;
  }
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T, {
    const T* px = x.data<T>();
    T* po = out->data<T>();
    const int32_t* pi = index.data<int32_t>();
    WithPackWidth<T>({px, po}, hidden, [&](auto width) {
      GatherRowsKernel<T, decltype(width)::value>
          <<<grid, kRowThreads, 0, s>>>(px, pi, x.dim(0), rows, hidden, po);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

void SumBlocks(const Tensor& blocks, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "SumBlocks";
  const Device dev = blocks.device();
  CheckStream(stream, dev, kOp);
  // The element counts were checked by the public op (ops/cpu/rows.cc).
  CheckActivation(blocks, dev, kOp, "blocks");
  CheckActivation(*out, dev, kOp, "out");
  CheckDType(*out, blocks.dtype(), kOp, "out");
  const int64_t m = out->numel();
  if (m == 0) return;
  const int64_t n = blocks.numel() / m;
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(blocks.dtype(), kOp, T, {
    const T* pb = blocks.data<T>();
    T* po = out->data<T>();
    // Block b starts b·m elements in: packs need m to be a whole number of packs (VectorAligned).
    WithPackWidth<T>({pb, po}, m, [&](auto width) {
      constexpr int kN = decltype(width)::value;
      const int grid = DeviceGrid(m / kN, kSumThreads, kSumThreads, stream);
      SumBlocksKernel<T, kN><<<grid, kSumThreads, 0, s>>>(pb, n, m, po);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace moefold::ops::cuda
