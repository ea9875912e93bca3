// CUDA MoE token permutation. ComputePermutation is a stable counting sort with one block per
// expert (count, then an ordered block scan of the matches), so the order equals the CPU's exactly.
// Permute/unpermute go through the inverse map pair → row, so every output row is a plain sum in
// a fixed order (no atomics). An index outside its range traps the kernel after printing it.
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kScanThreads = 1024;
constexpr int kRowThreads = 256;

__device__ __forceinline__ void CheckIndex(int64_t value, int64_t bound, const char* what) {
  if (value < 0 || value >= bound) {
    printf("moefold %s: index %lld outside [0, %lld)\n", what, static_cast<long long>(value),
           static_cast<long long>(bound));
    __trap();
  }
}

// counts[e] = #pairs with id e; first_bad = the smallest pair index whose id is out of range.
__global__ void CountExperts(const int32_t* ids, int64_t pairs, int experts, int32_t* counts,
                             int32_t* first_bad) {
  const int e = blockIdx.x;
  int count = 0;
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int32_t id = ids[p];
    count += id == e;
    if (e == 0 && (id < 0 || id >= experts)) atomicMin(first_bad, static_cast<int32_t>(p));
  }
  count = BlockSum(count);
  if (threadIdx.x == 0) counts[e] = count;
}

// Block e writes its pairs, in increasing pair index, at rows [Σ_{e'<e} counts, ...).
__global__ void PlaceExperts(const int32_t* ids, int64_t pairs, const int32_t* counts,
                             int32_t* sorted) {
  __shared__ int warp_totals[32];
  __shared__ int64_t base;
  const int e = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (threadIdx.x == 0) {
    int64_t offset = 0;
    for (int i = 0; i < e; ++i) offset += counts[i];
    base = offset;
  }
  __syncthreads();
  for (int64_t chunk = 0; chunk < pairs; chunk += blockDim.x) {
    const int64_t p = chunk + threadIdx.x;
    const bool match = p < pairs && ids[p] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, match);
    const int before_in_warp = __popc(ballot & ((1u << lane) - 1u));
    if (lane == 0) warp_totals[warp] = __popc(ballot);
    __syncthreads();
    int before = before_in_warp;
    int chunk_total = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) {
      if (w < warp) before += warp_totals[w];
      chunk_total += warp_totals[w];
    }
    if (match) sorted[base + before] = static_cast<int32_t>(p);
    __syncthreads();  // everyone read warp_totals and base before they change
    if (threadIdx.x == 0) base += chunk_total;
    __syncthreads();
  }
}

// row_of_pair[sorted[r]] = r (pre-filled with −1: pairs without a row).
__global__ void InvertSorted(const int32_t* sorted, int64_t rows, int64_t pairs,
                             int32_t* row_of_pair) {
  for (int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; r < rows;
       r += int64_t{gridDim.x} * blockDim.x) {
    CheckIndex(sorted[r], pairs, "permutation: sorted entry");
    row_of_pair[sorted[r]] = static_cast<int32_t>(r);
  }
}

template <typename T>
__global__ void PermuteKernel(const T* x, const int32_t* sorted, int k, int64_t tokens,
                              int64_t hidden, T* out) {
  const int64_t r = blockIdx.x;
  const int64_t pair = sorted[r];
  CheckIndex(pair, tokens * k, "PermuteTokens: sorted entry");
  const T* src = x + (pair / k) * hidden;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) out[r * hidden + h] = src[h];
}

// out[t] = Σ_j w[t, j]·y[row(t, j)] (w = nullptr: weight 1), rows in choice order; no row adds 0.
template <typename T>
__global__ void GatherSumKernel(const T* y, const int32_t* row_of_pair, const float* weights, int k,
                                int64_t hidden, T* out) {
  const int64_t t = blockIdx.x;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) {
      const int32_t r = row_of_pair[t * k + j];
      if (r < 0) continue;
      const float w = weights != nullptr ? weights[t * k + j] : 1.0f;
      acc += w * ToF32(y[static_cast<int64_t>(r) * hidden + h]);
    }
    out[t * hidden + h] = FromF32<T>(acc);
  }
}

// d_y[r] = w·d_out[t]; d_weights[pair] = ⟨d_out[t], y[r]⟩ (one block per row).
template <typename T>
__global__ void UnpermuteBackwardKernel(const T* d_out, const T* y, const int32_t* sorted,
                                        const float* weights, int k, int64_t pairs, int64_t hidden,
                                        T* d_y, float* d_weights) {
  const int64_t r = blockIdx.x;
  const int64_t pair = sorted[r];
  CheckIndex(pair, pairs, "UnpermuteTokensBackward: sorted entry");
  const float w = weights[pair];
  const T* g = d_out + (pair / k) * hidden;
  float dot = 0.0f;
  for (int64_t h = threadIdx.x; h < hidden; h += blockDim.x) {
    const float gh = ToF32(g[h]);
    dot += gh * ToF32(y[r * hidden + h]);
    d_y[r * hidden + h] = FromF32<T>(w * gh);
  }
  dot = BlockSum(dot);
  if (threadIdx.x == 0) d_weights[pair] = dot;
}

// The inverse permutation of `sorted` over `pairs` pair slots, as a scratch tensor.
Tensor RowOfPair(const Tensor& sorted, int64_t pairs, Stream& stream) {
  Tensor row_of_pair = Scratch({pairs}, DType::kI32, stream);
  MF_CUDA_CHECK(
      cudaMemsetAsync(row_of_pair.raw_data(), 0xff, row_of_pair.nbytes(), Native(stream)));
  const int64_t rows = sorted.numel();
  if (rows > 0) {
    InvertSorted<<<GridFor(rows, kRowThreads), kRowThreads, 0, Native(stream)>>>(
        sorted.data<int32_t>(), rows, pairs, row_of_pair.data<int32_t>());
    MF_CUDA_CHECK_LAUNCH();
  }
  return row_of_pair;
}

void CheckSorted(const Tensor& sorted, const Device& dev, const char* op) {
  CheckOn(sorted, dev, op, "sorted");
  CheckDType(sorted, DType::kI32, op, "sorted");
  CheckRank(sorted, 1, op, "sorted");
}

}  // namespace

void ComputePermutation(const Tensor& ids, int num_experts, Tensor* sorted, Tensor* counts,
                        Stream& stream) {
  constexpr const char* kOp = "ComputePermutation";
  const Device dev = ids.device();
  CheckStream(stream, dev, kOp);
  CheckOn(ids, dev, kOp, "ids");
  CheckDType(ids, DType::kI32, kOp, "ids");
  CheckRank(ids, 2, kOp, "ids");
  MF_CHECK_GT(num_experts, 0) << kOp << ": num_experts";
  const int64_t pairs = ids.numel();
  CheckOut(sorted, dev, DType::kI32, {pairs}, kOp, "sorted");
  CheckOut(counts, dev, DType::kI32, {num_experts}, kOp, "counts");
  const cudaStream_t s = Native(stream);
  Tensor flag = Scratch({1}, DType::kI32, stream);
  const int32_t none = INT32_MAX;
  MF_CUDA_CHECK(cudaMemcpyAsync(flag.raw_data(), &none, sizeof(none), cudaMemcpyHostToDevice, s));
  CountExperts<<<num_experts, kScanThreads, 0, s>>>(ids.data<int32_t>(), pairs, num_experts,
                                                    counts->data<int32_t>(), flag.data<int32_t>());
  MF_CUDA_CHECK_LAUNCH();
  int32_t bad = none;
  MF_CUDA_CHECK(cudaMemcpyAsync(&bad, flag.raw_data(), sizeof(bad), cudaMemcpyDeviceToHost, s));
  MF_CUDA_CHECK(cudaStreamSynchronize(s));
  if (bad != none) {
    int32_t id = 0;
    MF_CUDA_CHECK(cudaMemcpy(&id, ids.data<int32_t>() + bad, sizeof(id), cudaMemcpyDeviceToHost));
    MF_CHECK(false) << kOp << ": expert id " << id << " (token " << bad / ids.dim(1) << ", choice "
                    << bad % ids.dim(1) << ") out of range [0, E=" << num_experts << ")";
  }
  if (pairs == 0) return;
  PlaceExperts<<<num_experts, kScanThreads, 0, s>>>(
      ids.data<int32_t>(), pairs, counts->data<int32_t>(), sorted->data<int32_t>());
  MF_CUDA_CHECK_LAUNCH();
}

void PermuteTokens(const Tensor& x, const Tensor& sorted, int k, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "PermuteTokens";
  const Device dev = x.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(x, dev, kOp, "x");
  CheckRank(x, 2, kOp, "x");
  MF_CHECK_GT(k, 0) << kOp << ": k";
  CheckSorted(sorted, dev, kOp);
  const int64_t rows = sorted.numel(), hidden = x.dim(1);
  CheckOut(out, dev, x.dtype(), {rows, hidden}, kOp, "out");
  if (rows == 0 || hidden == 0) return;
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T,
                    PermuteKernel<T>
                    <<<static_cast<unsigned>(rows), kRowThreads, 0, Native(stream)>>>(
                        x.data<T>(), sorted.data<int32_t>(), k, x.dim(0), hidden, out->data<T>()));
  MF_CUDA_CHECK_LAUNCH();
}

void PermuteTokensBackward(const Tensor& d_out, const Tensor& sorted, int k, Tensor* d_x,
                           Stream& stream) {
  constexpr const char* kOp = "PermuteTokensBackward";
  const Device dev = d_out.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(d_out, dev, kOp, "d_out");
  CheckRank(d_out, 2, kOp, "d_out");
  MF_CHECK_GT(k, 0) << kOp << ": k";
  MF_CHECK(d_x != nullptr) << kOp << ": output d_x is null";
  CheckSorted(sorted, dev, kOp);
  const int64_t rows = sorted.numel(), hidden = d_out.dim(1);
  CheckShape(d_out, {rows, hidden}, kOp, "d_out");
  CheckRank(*d_x, 2, kOp, "d_x");
  CheckOut(d_x, dev, d_out.dtype(), {d_x->dim(0), hidden}, kOp, "d_x");
  const int64_t tokens = d_x->dim(0);
  if (tokens == 0 || hidden == 0) return;
  Tensor row_of_pair = RowOfPair(sorted, tokens * k, stream);
  MF_DISPATCH_FLOAT(
      d_out.dtype(), kOp, T,
      GatherSumKernel<T><<<static_cast<unsigned>(tokens), kRowThreads, 0, Native(stream)>>>(
          d_out.data<T>(), row_of_pair.data<int32_t>(), nullptr, k, hidden, d_x->data<T>()));
  MF_CUDA_CHECK_LAUNCH();
}

void UnpermuteTokens(const Tensor& y, const Tensor& sorted, const Tensor& weights, Tensor* out,
                     Stream& stream) {
  constexpr const char* kOp = "UnpermuteTokens";
  const Device dev = y.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(y, dev, kOp, "y");
  CheckRank(y, 2, kOp, "y");
  CheckOn(weights, dev, kOp, "weights");
  CheckDType(weights, DType::kF32, kOp, "weights");
  CheckRank(weights, 2, kOp, "weights");
  CheckSorted(sorted, dev, kOp);
  const int64_t tokens = weights.dim(0), k = weights.dim(1), hidden = y.dim(1);
  CheckShape(y, {sorted.numel(), hidden}, kOp, "y");
  CheckOut(out, dev, y.dtype(), {tokens, hidden}, kOp, "out");
  if (tokens == 0 || hidden == 0) return;
  Tensor row_of_pair = RowOfPair(sorted, tokens * k, stream);
  MF_DISPATCH_FLOAT(y.dtype(), kOp, T,
                    GatherSumKernel<T>
                    <<<static_cast<unsigned>(tokens), kRowThreads, 0, Native(stream)>>>(
                        y.data<T>(), row_of_pair.data<int32_t>(), weights.data<float>(),
                        static_cast<int>(k), hidden, out->data<T>()));
  MF_CUDA_CHECK_LAUNCH();
}

void UnpermuteTokensBackward(const Tensor& d_out, const Tensor& y, const Tensor& sorted,
                             const Tensor& weights, Tensor* d_y, Tensor* d_weights,
                             Stream& stream) {
  constexpr const char* kOp = "UnpermuteTokensBackward";
  const Device dev = y.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(y, dev, kOp, "y");
  CheckRank(y, 2, kOp, "y");
  CheckOn(weights, dev, kOp, "weights");
  CheckDType(weights, DType::kF32, kOp, "weights");
  CheckRank(weights, 2, kOp, "weights");
  CheckSorted(sorted, dev, kOp);
  const int64_t tokens = weights.dim(0), k = weights.dim(1), hidden = y.dim(1);
  const int64_t rows = sorted.numel();
  CheckShape(y, {rows, hidden}, kOp, "y");
  CheckOn(d_out, dev, kOp, "d_out");
  CheckDType(d_out, y.dtype(), kOp, "d_out");
  CheckShape(d_out, {tokens, hidden}, kOp, "d_out");
  CheckOut(d_y, dev, y.dtype(), y.shape(), kOp, "d_y");
  CheckOut(d_weights, dev, DType::kF32, weights.shape(), kOp, "d_weights");
  d_weights->SetZero(stream);  // a dropped pair has no row and so no gradient
  if (rows == 0) return;
  MF_DISPATCH_FLOAT(
      y.dtype(), kOp, T,
      UnpermuteBackwardKernel<T><<<static_cast<unsigned>(rows), kRowThreads, 0, Native(stream)>>>(
          d_out.data<T>(), y.data<T>(), sorted.data<int32_t>(), weights.data<float>(),
          static_cast<int>(k), tokens * k, hidden, d_y->data<T>(), d_weights->data<float>()));
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
