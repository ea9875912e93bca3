// CUDA token embedding: a row gather forward, an atomic scatter-add backward into f32 d_table
// (order of the f32 additions for a repeated id is not fixed). Ids are validated on the device
// first; an out-of-range id aborts with its value and position, like the CPU reference.
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

// first_bad = the smallest position whose id is outside [0, vocab) (left at INT_MAX if none).
__global__ void FindBadId(const int32_t* ids, int64_t n, int64_t vocab, int32_t* first_bad) {
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < n;
       t += int64_t{gridDim.x} * blockDim.x) {
    if (ids[t] < 0 || ids[t] >= vocab) atomicMin(first_bad, static_cast<int32_t>(t));
  }
}

void CheckIds(const Tensor& ids, int64_t vocab, const Stream& stream, const char* op) {
  CheckOn(ids, stream.device(), op, "ids");
  CheckDType(ids, DType::kI32, op, "ids");
  CheckRank(ids, 1, op, "ids");
  const int64_t n = ids.numel();
  if (n == 0) return;
  Tensor flag = Scratch({1}, DType::kI32, stream);
  const int32_t none = INT32_MAX;
  const cudaStream_t s = Native(stream);
  MF_CUDA_CHECK(cudaMemcpyAsync(flag.raw_data(), &none, sizeof(none), cudaMemcpyHostToDevice, s));
  FindBadId<<<GridFor(n, kThreads), kThreads, 0, s>>>(ids.data<int32_t>(), n, vocab,
                                                      flag.data<int32_t>());
  MF_CUDA_CHECK_LAUNCH();
  int32_t bad = none;
  MF_CUDA_CHECK(cudaMemcpyAsync(&bad, flag.raw_data(), sizeof(bad), cudaMemcpyDeviceToHost, s));
  MF_CUDA_CHECK(cudaStreamSynchronize(s));
  if (bad != none) {
    int32_t id = 0;
    MF_CUDA_CHECK(cudaMemcpy(&id, ids.data<int32_t>() + bad, sizeof(id), cudaMemcpyDeviceToHost));
    MF_CHECK(false) << op << ": token id " << id << " at position " << bad
                    << " is out of range [0, V=" << vocab << ")";
  }
}

template <typename T>
__global__ void GatherRows(const int32_t* ids, const T* table, T* out, int64_t hidden) {
  const int64_t t = blockIdx.x;
  const T* src = table + static_cast<int64_t>(ids[t]) * hidden;
  T* dst = out + t * hidden;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) dst[h] = src[h];
}

template <typename T>
__global__ void ScatterAddRows(const int32_t* ids, const T* d_out, float* d_table, int64_t hidden) {
  const int64_t t = blockIdx.x;
  float* dst = d_table + static_cast<int64_t>(ids[t]) * hidden;
  const T* src = d_out + t * hidden;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) atomicAdd(dst + h, ToF32(src[h]));
}

}  // namespace

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "EmbeddingForward";
  const Device dev = table.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(table, dev, kOp, "table");
  CheckRank(table, 2, kOp, "table");
  CheckIds(ids, table.dim(0), stream, kOp);
  const int64_t tokens = ids.numel(), hidden = table.dim(1);
  CheckOut(out, dev, table.dtype(), {tokens, hidden}, kOp, "out");
  if (tokens == 0 || hidden == 0) return;
  MF_DISPATCH_FLOAT(table.dtype(), kOp, T,
                    GatherRows<T><<<static_cast<unsigned>(tokens), kThreads, 0, Native(stream)>>>(
                        ids.data<int32_t>(), table.data<T>(), out->data<T>(), hidden));
  MF_CUDA_CHECK_LAUNCH();
}

void EmbeddingBackward(const Tensor& ids, const Tensor& d_out, Tensor* d_table, Stream& stream) {
  constexpr const char* kOp = "EmbeddingBackward";
  MF_CHECK(d_table != nullptr) << kOp << ": output d_table is null";
  const Device dev = d_table->device();
  CheckStream(stream, dev, kOp);
  CheckOn(*d_table, dev, kOp, "d_table");
  CheckDType(*d_table, DType::kF32, kOp, "d_table");
  CheckRank(*d_table, 2, kOp, "d_table");
  CheckIds(ids, d_table->dim(0), stream, kOp);
  const int64_t tokens = ids.numel(), hidden = d_table->dim(1);
  CheckActivation(d_out, dev, kOp, "d_out");
  CheckShape(d_out, {tokens, hidden}, kOp, "d_out");
  if (tokens == 0 || hidden == 0) return;
  MF_DISPATCH_FLOAT(d_out.dtype(), kOp, T,
                    ScatterAddRows<T>
                    <<<static_cast<unsigned>(tokens), kThreads, 0, Native(stream)>>>(
                        ids.data<int32_t>(), d_out.data<T>(), d_table->data<float>(), hidden));
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
