// CUDA token embedding: a row gather forward (one warp per token, 16-byte packs when the table,
// the output and H allow), an atomic scatter-add backward into f32 d_table (order of the f32
// additions for a repeated id is not fixed). No host wait: an id outside [0, V) traps the kernel
// after printing its value and position (the callers check ids on their host copies first). The
// shard ops run the same kernels with ids outside the shard selecting zeros (forward) or nothing
// (backward) instead of trapping.
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

// The row of token t in a table of `rows` rows: with kShard ids[t] − first_id, or -1 when that is
// outside [0, rows); else ids[t] itself, checked (CheckedId).
template <bool kShard>
__device__ __forceinline__ int64_t RowOf(const int32_t* ids, int64_t t, int64_t rows,
                                         int64_t first_id, const char* op) {
  if constexpr (kShard) {
    const int64_t row = int64_t{ids[t]} - first_id;
    return row >= 0 && row < rows ? row : -1;
  } else {
    return CheckedId(ids, t, rows, op);
  }
}

template <typename T, int N, bool kShard>
__global__ void GatherRows(const int32_t* ids, const T* table, int64_t tokens, int64_t rows,
                           int64_t first_id, int64_t hidden, T* out) {
  const int64_t packs = hidden / N;
  for (int64_t t = FirstRow(); t < tokens; t += RowStride()) {
    const int64_t row = RowOf<kShard>(ids, t, rows, first_id, "EmbeddingForward");
    T* dst = out + t * hidden;
    if (row < 0) {  // another shard's id: this shard's share of its embedding is zero
      Pack<T, N> zero;
#pragma unroll
      for (int e = 0; e < N; ++e) zero.v[e] = FromF32<T>(0.0f);
      for (int64_t i = Lane(); i < packs; i += 32) StorePack<N>(dst + i * N, zero);
      continue;
    }
    const T* src = table + row * hidden;
    ForEachPack(
        Lane(), packs, 32, [&](int64_t i) { return LoadPack<N>(src + i * N); },
        [&](int64_t i, const Pack<T, N>& p) { StorePack<N>(dst + i * N, p); });
  }
}

template <typename T, int N, bool kShard>
__global__ void ScatterAddRows(const int32_t* ids, const T* d_out, int64_t tokens, int64_t rows,
                               int64_t first_id, int64_t hidden, float* d_table) {
  const int64_t packs = hidden / N;
  for (int64_t t = FirstRow(); t < tokens; t += RowStride()) {
    const int64_t row = RowOf<kShard>(ids, t, rows, first_id, "EmbeddingBackward");
    if (row < 0) continue;
    float* dst = d_table + row * hidden;
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

// The gather of EmbeddingForward (kShard false: ids checked against the table's rows) and of
// EmbeddingShardForward (kShard true: ids shifted by first_id, outside ones give zeros).
template <bool kShard>
void Gather(const Tensor& ids, const Tensor& table, int64_t first_id, Tensor* out, Stream& stream,
            const char* op) {
  const Device dev = table.device();
  CheckStream(stream, dev, op);
  CheckActivation(table, dev, op, kShard ? "shard" : "table");
  CheckRank(table, 2, op, kShard ? "shard" : "table");
  CheckIds(ids, dev, op);
  const int64_t tokens = ids.numel(), rows = table.dim(0), hidden = table.dim(1);
  CheckOut(out, dev, table.dtype(), {tokens, hidden}, op, "out");
  if (tokens == 0 || hidden == 0) return;
  const int grid = DeviceGrid(tokens, kRowWarps, kThreads, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(table.dtype(), op, T, {
    const T* pt = table.data<T>();
    T* po = out->data<T>();
    WithPackWidth<T>({pt, po}, hidden, [&](auto width) {
      GatherRows<T, decltype(width)::value, kShard>
          <<<grid, kThreads, 0, s>>>(ids.data<int32_t>(), pt, tokens, rows, first_id, hidden, po);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

// The scatter-add of EmbeddingBackward and EmbeddingShardBackward (as Gather).
template <bool kShard>
void ScatterAdd(const Tensor& ids, const Tensor& d_out, int64_t first_id, Tensor* d_table,
                Stream& stream, const char* op) {
  const char* name = kShard ? "d_shard" : "d_table";
  MF_CHECK(d_table != nullptr) << op << ": output " << name << " is null";
  const Device dev = d_table->device();
  CheckStream(stream, dev, op);
  CheckOn(*d_table, dev, op, name);
  CheckDType(*d_table, DType::kF32, op, name);
  CheckRank(*d_table, 2, op, name);
  CheckIds(ids, dev, op);
  const int64_t tokens = ids.numel(), rows = d_table->dim(0), hidden = d_table->dim(1);
  CheckActivation(d_out, dev, op, "d_out");
  CheckShape(d_out, {tokens, hidden}, op, "d_out");
  if (tokens == 0 || hidden == 0) return;
  const int grid = DeviceGrid(tokens, kRowWarps, kThreads, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(d_out.dtype(), op, T, {
    const T* pg = d_out.data<T>();
    float* pt = d_table->data<float>();
    WithPackWidth<T>({pg}, hidden, [&](auto width) {
      ScatterAddRows<T, decltype(width)::value, kShard>
          <<<grid, kThreads, 0, s>>>(ids.data<int32_t>(), pg, tokens, rows, first_id, hidden, pt);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor* out, Stream& stream) {
  Gather<false>(ids, table, 0, out, stream, "EmbeddingForward");
}

void EmbeddingBackward(const Tensor& ids, const Tensor& d_out, Tensor* d_table, Stream& stream) {
  ScatterAdd<false>(ids, d_out, 0, d_table, stream, "EmbeddingBackward");
}

void EmbeddingShardForward(const Tensor& ids, const Tensor& shard, int64_t first_id, Tensor* out,
                           Stream& stream) {
  Gather<true>(ids, shard, first_id, out, stream, "EmbeddingShardForward");
}

void EmbeddingShardBackward(const Tensor& ids, const Tensor& d_out, int64_t first_id,
                            Tensor* d_shard, Stream& stream) {
  ScatterAdd<true>(ids, d_out, first_id, d_shard, stream, "EmbeddingShardBackward");
}

}  // namespace moefold::ops::cuda
