// CUDA token embedding: a row gather forward (one warp per token, 16-byte packs when the table,
// the output and H allow), an atomic scatter-add backward into f32 d_table (order of the f32
// additions for a repeated id is not fixed). No host wait: an id outside [0, V) traps the kernel
// after printing its value and position (the callers check ids on their host copies first).
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kRowWarps = 8;  // tokens in flight per block, one per warp
constexpr int kThreads = 32 * kRowWarps;

__device__ __forceinline__ int Lane() { return threadIdx.x % 32; }
__device__ __forceinline__ int64_t FirstRow() {
  return blockIdx.x * int64_t{kRowWarps} + threadIdx.x / 32;
}
__device__ __forceinline__ int64_t RowStride() { return int64_t{gridDim.x} * kRowWarps; }

// The id of token t, trapping (every lane, after lane 0 printed it) when it is outside [0, vocab).
__device__ __forceinline__ int64_t CheckedId(const int32_t* ids, int64_t t, int64_t vocab,
                                             const char* op) {
  const int32_t id = ids[t];
  if (id < 0 || id >= vocab) {
    if (Lane() == 0) {
      printf("moefold %s: token id %d at position %lld is out of range [0, V=%lld)\n", op, id,
             static_cast<long long>(t), static_cast<long long>(vocab));
    }
    __trap();
  }
  return id;
}

template <typename T, int N>
__global__ void GatherRows(const int32_t* ids, const T* table, int64_t tokens, int64_t vocab,
                           int64_t hidden, T* out) {
  const int64_t packs = hidden / N;
  for (int64_t t = FirstRow(); t < tokens; t += RowStride()) {
    const T* src = table + CheckedId(ids, t, vocab, "EmbeddingForward") * hidden;
    T* dst = out + t * hidden;
    ForEachPack(
        Lane(), packs, 32, [&](int64_t i) { return LoadPack<N>(src + i * N); },
        [&](int64_t i, const Pack<T, N>& p) { StorePack<N>(dst + i * N, p); });
  }
}

template <typename T, int N>
__global__ void ScatterAddRows(const int32_t* ids, const T* d_out, int64_t tokens, int64_t vocab,
                               int64_t hidden, float* d_table) {
  const int64_t packs = hidden / N;
  for (int64_t t = FirstRow(); t < tokens; t += RowStride()) {
    float* dst = d_table + CheckedId(ids, t, vocab, "EmbeddingBackward") * hidden;
    const T* src = d_out + t * hidden;
    ForEachPack(
        Lane(), packs, 32, [&](int64_t i) { return LoadPack<N>(src + i * N); },
        [&](int64_t i, const Pack<T, N>& p) {
#pragma unroll
          for (int e = 0; e < N; ++e) atomicAdd(dst + i * N + e, ToF32(p.v[e]));
        });
  }
}

void CheckIds(const Tensor& ids, const Device& dev, const char* op) {
  CheckOn(ids, dev, op, "ids");
  CheckDType(ids, DType::kI32, op, "ids");
  CheckRank(ids, 1, op, "ids");
}

}  // namespace

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "EmbeddingForward";
  const Device dev = table.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(table, dev, kOp, "table");
  CheckRank(table, 2, kOp, "table");
  CheckIds(ids, dev, kOp);
  const int64_t tokens = ids.numel(), vocab = table.dim(0), hidden = table.dim(1);
  CheckOut(out, dev, table.dtype(), {tokens, hidden}, kOp, "out");
  if (tokens == 0 || hidden == 0) return;
  const int grid = DeviceGrid(tokens, kRowWarps, kThreads, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(table.dtype(), kOp, T, {
    const T* pt = table.data<T>();
    T* po = out->data<T>();
    WithPackWidth<T>({pt, po}, hidden, [&](auto width) {
      GatherRows<T, decltype(width)::value>
          <<<grid, kThreads, 0, s>>>(ids.data<int32_t>(), pt, tokens, vocab, hidden, po);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

void EmbeddingBackward(const Tensor& ids, const Tensor& d_out, Tensor* d_table, Stream& stream) {
  constexpr const char* kOp = "EmbeddingBackward";
  MF_CHECK(d_table != nullptr) << kOp << ": output d_table is null";
  const Device dev = d_table->device();
  CheckStream(stream, dev, kOp);
  CheckOn(*d_table, dev, kOp, "d_table");
  CheckDType(*d_table, DType::kF32, kOp, "d_table");
  CheckRank(*d_table, 2, kOp, "d_table");
  CheckIds(ids, dev, kOp);
  const int64_t tokens = ids.numel(), vocab = d_table->dim(0), hidden = d_table->dim(1);
  CheckActivation(d_out, dev, kOp, "d_out");
  CheckShape(d_out, {tokens, hidden}, kOp, "d_out");
  if (tokens == 0 || hidden == 0) return;
  const int grid = DeviceGrid(tokens, kRowWarps, kThreads, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(d_out.dtype(), kOp, T, {
    const T* pg = d_out.data<T>();
    float* pt = d_table->data<float>();
    WithPackWidth<T>({pg}, hidden, [&](auto width) {
      ScatterAddRows<T, decltype(width)::value>
          <<<grid, kThreads, 0, s>>>(ids.data<int32_t>(), pg, tokens, vocab, hidden, pt);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace moefold::ops::cuda
