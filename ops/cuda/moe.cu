// CUDA MoE token permutation. ComputePermutation is a stable counting sort with one block per
// expert (count, then an ordered block scan of the matches), so the order equals the CPU's exactly;
// capacity mode sorts every pair the same way, ranks the pairs of each expert over capacity by
// weight and compacts the kept ones with the same ordered scan.
// Permute/unpermute go through the inverse map pair → row, one warp per row, so every output row
// is a plain sum in a fixed order (no atomics); rows move in 16-byte packs when pointers and H
// allow, single elements otherwise. CountExpertsPerUnit counts in integers (shared histograms). No
// host waits: an index or expert id outside its range traps the kernel after printing it.
#include <algorithm>
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kScanThreads = 1024;
constexpr int kRowWarps = 8;  // rows in flight per block, one per warp
constexpr int kRowThreads = 32 * kRowWarps;
constexpr int kIndexThreads = 256;
constexpr int kCountThreads = 1024;
constexpr int kRankThreads = 256;  // RankByWeight: positions per block and step, and its tile
constexpr int64_t kPairsPerCountBlock = 8192;  // CountExpertsPerUnit: pairs one block histograms
constexpr int kMaxSharedBins = 12288;          // 48 KiB of i32 bins

__device__ __forceinline__ int Lane() { return threadIdx.x % 32; }
__device__ __forceinline__ int64_t FirstRow() {
  return blockIdx.x * int64_t{kRowWarps} + threadIdx.x / 32;
}
__device__ __forceinline__ int64_t RowStride() { return int64_t{gridDim.x} * kRowWarps; }

__device__ __forceinline__ void CheckIndex(int64_t value, int64_t bound, const char* what) {
  if (value < 0 || value >= bound) {
    printf("moefold %s: index %lld outside [0, %lld)\n", what, static_cast<long long>(value),
           static_cast<long long>(bound));
    __trap();
  }
}

// Traps after printing an expert id outside [0, experts) with its token and choice.
__device__ __forceinline__ void CheckExpert(int32_t id, int64_t pair, int k, int experts,
                                            const char* op) {
  if (id < 0 || id >= experts) {
    printf("moefold %s: expert id %d (token %lld, choice %lld) out of range [0, E=%d)\n", op, id,
           static_cast<long long>(pair / k), static_cast<long long>(pair % k), experts);
    __trap();
  }
}

// counts[e] = #pairs with id e. Block 0 also checks every id.
__global__ void CountExperts(const int32_t* ids, int64_t pairs, int k, int experts,
                             int32_t* counts) {
  const int e = blockIdx.x;
  int count = 0;
  for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int32_t id = ids[p];
    count += id == e;
    if (e == 0) CheckExpert(id, p, k, experts, "ComputePermutation");
  }
  count = BlockSum(count);
  if (threadIdx.x == 0) counts[e] = count;
}

// One step of an ordered compaction over the block: the threads whose `match` is set get
// consecutive slots in thread order, starting at *base (shared memory), which then moves past
// them. Returns this thread's slot (meaningful where match is set). Every thread of the block
// calls it (it synchronises); blockDim.x is a multiple of 32, at most 1024.
__device__ int64_t OrderedSlot(bool match, int64_t* base) {
  __shared__ int warp_totals[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned ballot = __ballot_sync(0xffffffffu, match);
  if (lane == 0) warp_totals[warp] = __popc(ballot);
  __syncthreads();
  int before = __popc(ballot & ((1u << lane) - 1u));
  int total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) {
    if (w < warp) before += warp_totals[w];
    total += warp_totals[w];
  }
  const int64_t slot = *base + before;
  __syncthreads();  // everyone read warp_totals and base before they change
  if (threadIdx.x == 0) *base += total;
  __syncthreads();
  return slot;
}

// Block e writes its pairs, in increasing pair index, at rows [Σ_{e'<e} counts, ...).
__global__ void PlaceExperts(const int32_t* ids, int64_t pairs, const int32_t* counts,
                             int32_t* sorted) {
  __shared__ int64_t base;
  const int e = blockIdx.x;
  if (threadIdx.x == 0) {
    int64_t offset = 0;
    for (int i = 0; i < e; ++i) offset += counts[i];
    base = offset;
  }
  __syncthreads();
  for (int64_t chunk = 0; chunk < pairs; chunk += blockDim.x) {
    const int64_t p = chunk + threadIdx.x;
    const bool match = p < pairs && ids[p] == e;
    const int64_t slot = OrderedSlot(match, &base);
    if (match) sorted[slot] = static_cast<int32_t>(p);
  }
}

// Capacity mode, probs policy: keep[off_e + i] = 1 when position i of expert e's segment of `all`
// (its pairs in token order, starting at off_e) ranks among the expert's `capacity` highest
// weights, ties to the earlier pair: rank(i) = #{j : w_j > w_i or (w_j = w_i and j < i)}. Only
// experts over capacity rank; block (e, y) takes positions y·blockDim, then every
// gridDim.y·blockDim further, and reads the segment's weights a tile at a time from shared memory
// (quadratic in the expert's pairs, which the blocks of grid.y share).
__global__ void RankByWeight(const int32_t* all, const float* weights, const int32_t* demand,
                             int64_t capacity, uint8_t* keep) {
  __shared__ float tile[kRankThreads];
  __shared__ int64_t segment;
  const int e = blockIdx.x;
  const int64_t n = demand[e];
  const int64_t threads = blockDim.x;
  // Whole-block exits only (the tile loop below synchronises).
  if (n <= capacity || int64_t{blockIdx.y} * threads >= n) return;
  if (threadIdx.x == 0) {
    int64_t offset = 0;
    for (int i = 0; i < e; ++i) offset += demand[i];
    segment = offset;
  }
  __syncthreads();
  const int64_t off = segment;
  const int64_t stride = int64_t{gridDim.y} * threads;
  for (int64_t base = int64_t{blockIdx.y} * threads; base < n; base += stride) {
    const int64_t i = base + threadIdx.x;
    const float wi = i < n ? weights[all[off + i]] : 0.0f;
    int64_t rank = 0;
    for (int64_t t0 = 0; t0 < n; t0 += threads) {
      __syncthreads();  // the previous tile has been read by every thread
      if (t0 + threadIdx.x < n) tile[threadIdx.x] = weights[all[off + t0 + threadIdx.x]];
      __syncthreads();
      const int len = static_cast<int>(n - t0 < threads ? n - t0 : threads);
      for (int j = 0; j < len; ++j) {
        const float wj = tile[j];
        rank += (wj > wi) || (wj == wi && t0 + j < i);
      }
    }
    if (i < n) keep[off + i] = rank < capacity ? 1 : 0;
  }
}

// Capacity mode: block e writes the pairs expert e keeps, in token order, at rows
// [Σ_{e'<e} min(demand_e', C), ...) of `sorted` and sets counts[e] = min(demand_e, C). Within
// capacity every pair is kept; over it, the first C (position policy) or those `keep` marks.
__global__ void CompactKept(const int32_t* all, const int32_t* demand, int64_t capacity,
                            const uint8_t* keep, int32_t* counts, int32_t* sorted) {
  __shared__ int64_t base, segment;
  const int e = blockIdx.x;
  const int64_t n = demand[e];
  if (threadIdx.x == 0) {
    int64_t offset = 0, out = 0;
    for (int i = 0; i < e; ++i) {
      offset += demand[i];
      out += demand[i] < capacity ? demand[i] : capacity;
    }
    segment = offset;
    base = out;
    counts[e] = static_cast<int32_t>(n < capacity ? n : capacity);
  }
  __syncthreads();
  const int64_t off = segment;
  const bool over = n > capacity;
  for (int64_t chunk = 0; chunk < n; chunk += blockDim.x) {
    const int64_t i = chunk + threadIdx.x;
    const bool kept =
        i < n && (!over || (keep != nullptr ? keep[off + i] != 0 : i < capacity));
    const int64_t slot = OrderedSlot(kept, &base);
    if (kept) sorted[slot] = all[off + i];
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

// out[r] = x[sorted[r] / k], one warp per row.
template <typename T, int N>
__global__ void PermuteKernel(const T* x, const int32_t* sorted, int k, int64_t tokens,
                              int64_t rows, int64_t hidden, T* out) {
  const int64_t packs = hidden / N;
  for (int64_t r = FirstRow(); r < rows; r += RowStride()) {
    const int64_t pair = sorted[r];
    CheckIndex(pair, tokens * k, "PermuteTokens: sorted entry");
    const T* src = x + (pair / k) * hidden;
    T* dst = out + r * hidden;
    ForEachPack(
        Lane(), packs, 32, [&](int64_t i) { return LoadPack<N>(src + i * N); },
        [&](int64_t i, const Pack<T, N>& p) { StorePack<N>(dst + i * N, p); });
  }
}

// out[t] = Σ_j w[t, j]·y[row(t, j)] (w = nullptr: weight 1), rows in choice order; no row adds 0.
// One warp per token; each lane keeps kPacksInFlight packs of sums and, per choice, loads all of
// them before adding.
template <typename T, int N>
__global__ void GatherSumKernel(const T* y, const int32_t* row_of_pair, const float* weights, int k,
                                int64_t tokens, int64_t hidden, T* out) {
  constexpr int kU = kPacksInFlight;
  const int64_t packs = hidden / N;
  for (int64_t t = FirstRow(); t < tokens; t += RowStride()) {
    for (int64_t base = Lane(); base < packs; base += 32 * kU) {
      float acc[kU][N];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
#pragma unroll
        for (int e = 0; e < N; ++e) acc[u][e] = 0.0f;
      }
      for (int j = 0; j < k; ++j) {
        const int32_t r = row_of_pair[t * k + j];
        if (r < 0) continue;
        const float w = weights != nullptr ? weights[t * k + j] : 1.0f;
        const T* yr = y + static_cast<int64_t>(r) * hidden;
        Pack<T, N> p[kU];
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int64_t i = base + u * 32;
          if (i < packs) p[u] = LoadPack<N>(yr + i * N);
        }
#pragma unroll
        for (int u = 0; u < kU; ++u) {
#pragma unroll
          for (int e = 0; e < N; ++e) acc[u][e] += w * ToF32(p[u].v[e]);
        }
      }
      T* dst = out + t * hidden;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t i = base + u * 32;
        if (i >= packs) continue;
        Pack<T, N> o;
#pragma unroll
        for (int e = 0; e < N; ++e) o.v[e] = FromF32<T>(acc[u][e]);
        StorePack<N>(dst + i * N, o);
      }
    }
  }
}

// d_y[r] = w·d_out[t]; d_weights[pair] = ⟨d_out[t], y[r]⟩ (one warp per row).
template <typename T, int N>
__global__ void UnpermuteBackwardKernel(const T* d_out, const T* y, const int32_t* sorted,
                                        const float* weights, int k, int64_t pairs, int64_t rows,
                                        int64_t hidden, T* d_y, float* d_weights) {
  struct In {
    Pack<T, N> g, y;
  };
  const int64_t packs = hidden / N;
  for (int64_t r = FirstRow(); r < rows; r += RowStride()) {
    const int64_t pair = sorted[r];
    CheckIndex(pair, pairs, "UnpermuteTokensBackward: sorted entry");
    const float w = weights[pair];
    const T* g = d_out + (pair / k) * hidden;
    const T* yr = y + r * hidden;
    T* dyr = d_y + r * hidden;
    float dot = 0.0f;
    ForEachPack(
        Lane(), packs, 32,
        [&](int64_t i) {
          return In{LoadPack<N>(g + i * N), LoadPack<N>(yr + i * N)};
        },
        [&](int64_t i, const In& in) {
          Pack<T, N> out;
#pragma unroll
          for (int e = 0; e < N; ++e) {
            const float gh = ToF32(in.g.v[e]);
            dot += gh * ToF32(in.y.v[e]);
            out.v[e] = FromF32<T>(w * gh);
          }
          StorePack<N>(dyr + i * N, out);
        });
    dot = WarpSum(dot);
    if (Lane() == 0) d_weights[pair] = dot;
  }
}

// Block (u, split) histograms its share of unit u's pairs in shared memory. With one split per
// unit the block writes counts[u] itself (f32); otherwise it adds its bins to the i32 `partial`
// (integer atomics: the totals do not depend on their order) and CountsToF32 converts.
template <bool kSingleSplit>
__global__ void CountPerUnitKernel(const int32_t* ids, int64_t tokens, int k, int experts,
                                   int64_t first_row, int64_t unit_rows, int32_t* partial,
                                   float* counts) {
  extern __shared__ int bins[];
  const int64_t u = blockIdx.x;
  for (int e = threadIdx.x; e < experts; e += blockDim.x) bins[e] = 0;
  __syncthreads();
  // Unit u holds the global rows [u·unit_rows, (u + 1)·unit_rows): local rows shifted by first_row.
  const int64_t unit_begin = u * unit_rows - first_row, unit_end = unit_begin + unit_rows;
  const int64_t row_begin = unit_begin > 0 ? unit_begin : 0;
  const int64_t row_end = unit_end < tokens ? unit_end : tokens;
  const int64_t pair_begin = row_begin * k;
  const int64_t pair_end = row_end > row_begin ? row_end * k : pair_begin;
  const int64_t per_split = (pair_end - pair_begin + gridDim.y - 1) / gridDim.y;
  const int64_t begin = pair_begin + blockIdx.y * per_split;
  const int64_t end = begin + per_split < pair_end ? begin + per_split : pair_end;
  for (int64_t p = begin + threadIdx.x; p < end; p += blockDim.x) {
    const int32_t id = ids[p];
    CheckExpert(id, p, k, experts, "CountExpertsPerUnit");
    atomicAdd(&bins[id], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < experts; e += blockDim.x) {
    if (kSingleSplit) {
      counts[u * experts + e] = static_cast<float>(bins[e]);
    } else if (bins[e] != 0) {
      atomicAdd(&partial[u * experts + e], bins[e]);
    }
  }
}

__global__ void CountsToF32(const int32_t* partial, int64_t n, float* counts) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    counts[i] = static_cast<float>(partial[i]);
  }
}

// The inverse permutation of `sorted` over `pairs` pair slots, as a scratch tensor.
Tensor RowOfPair(const Tensor& sorted, int64_t pairs, Stream& stream) {
  Tensor row_of_pair = Scratch({pairs}, DType::kI32, stream);
  MF_CUDA_CHECK(
      cudaMemsetAsync(row_of_pair.raw_data(), 0xff, row_of_pair.nbytes(), Native(stream)));
  const int64_t rows = sorted.numel();
  if (rows > 0) {
    InvertSorted<<<DeviceGrid(rows, kIndexThreads, kIndexThreads, stream), kIndexThreads, 0,
                   Native(stream)>>>(sorted.data<int32_t>(), rows, pairs,
                                     row_of_pair.data<int32_t>());
    MF_CUDA_CHECK_LAUNCH();
  }
  return row_of_pair;
}

void CheckSorted(const Tensor& sorted, const Device& dev, const char* op) {
  CheckOn(sorted, dev, op, "sorted");
  CheckDType(sorted, DType::kI32, op, "sorted");
  CheckRank(sorted, 1, op, "sorted");
}

int RowGrid(int64_t rows, const Stream& stream) {
  return DeviceGrid(rows, kRowWarps, kRowThreads, stream);
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
  const int k = static_cast<int>(std::max<int64_t>(ids.dim(1), 1));
  CountExperts<<<num_experts, kScanThreads, 0, s>>>(ids.data<int32_t>(), pairs, k, num_experts,
                                                    counts->data<int32_t>());
  MF_CUDA_CHECK_LAUNCH();
  if (pairs == 0) return;
  PlaceExperts<<<num_experts, kScanThreads, 0, s>>>(
      ids.data<int32_t>(), pairs, counts->data<int32_t>(), sorted->data<int32_t>());
  MF_CUDA_CHECK_LAUNCH();
}

void ComputeCapacityPermutation(const Tensor& ids, const Tensor& weights, int num_experts,
                                int64_t capacity, DropPolicy policy, Tensor* sorted,
                                Tensor* counts, Tensor* demand, Stream& stream) {
  constexpr const char* kOp = "ComputeCapacityPermutation";
  const Device dev = ids.device();
  CheckStream(stream, dev, kOp);
  CheckOn(ids, dev, kOp, "ids");
  CheckDType(ids, DType::kI32, kOp, "ids");
  CheckRank(ids, 2, kOp, "ids");
  CheckIn(weights, dev, DType::kF32, ids.shape(), kOp, "weights");
  MF_CHECK_GT(num_experts, 0) << kOp << ": num_experts";
  MF_CHECK(capacity >= 0 && capacity <= INT32_MAX) << kOp << ": capacity " << capacity;
  const int64_t pairs = ids.numel();
  CheckOut(sorted, dev, DType::kI32, {pairs}, kOp, "sorted");
  CheckOut(counts, dev, DType::kI32, {num_experts}, kOp, "counts");
  CheckOut(demand, dev, DType::kI32, {num_experts}, kOp, "demand");
  const cudaStream_t s = Native(stream);
  const int k = static_cast<int>(std::max<int64_t>(ids.dim(1), 1));
  CountExperts<<<num_experts, kScanThreads, 0, s>>>(ids.data<int32_t>(), pairs, k, num_experts,
                                                    demand->data<int32_t>());
  MF_CUDA_CHECK_LAUNCH();
  if (pairs == 0) {
    MF_CUDA_CHECK(cudaMemsetAsync(counts->raw_data(), 0, counts->nbytes(), s));
    return;
  }
  MF_CUDA_CHECK(cudaMemsetAsync(sorted->raw_data(), 0xff, sorted->nbytes(), s));  // −1 past N
  // Every pair, stably sorted by expert: each expert's segment in token order.
  Tensor all = Scratch({pairs}, DType::kI32, stream);
  PlaceExperts<<<num_experts, kScanThreads, 0, s>>>(ids.data<int32_t>(), pairs,
                                                    demand->data<int32_t>(), all.data<int32_t>());
  MF_CUDA_CHECK_LAUNCH();
  Tensor keep;
  if (policy == DropPolicy::kProbs) {
    keep = Scratch({pairs}, DType::kU8, stream);
    // An expert holds at most every pair: enough blocks per expert for that, the idle ones exit.
    const int64_t splits = std::min<int64_t>((pairs + kRankThreads - 1) / kRankThreads, 65535);
    RankByWeight<<<dim3(num_experts, static_cast<unsigned>(splits)), kRankThreads, 0, s>>>(
        all.data<int32_t>(), weights.data<float>(), demand->data<int32_t>(), capacity,
        keep.data<uint8_t>());
    MF_CUDA_CHECK_LAUNCH();
  }
  CompactKept<<<num_experts, kScanThreads, 0, s>>>(
      all.data<int32_t>(), demand->data<int32_t>(), capacity,
      policy == DropPolicy::kProbs ? keep.data<uint8_t>() : nullptr, counts->data<int32_t>(),
      sorted->data<int32_t>());
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
  const int grid = RowGrid(rows, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T, {
    const T* px = x.data<T>();
    T* po = out->data<T>();
    const int32_t* ps = sorted.data<int32_t>();
    WithPackWidth<T>({px, po}, hidden, [&](auto width) {
      PermuteKernel<T, decltype(width)::value>
          <<<grid, kRowThreads, 0, s>>>(px, ps, k, x.dim(0), rows, hidden, po);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

namespace {

// out (tokens, H) = the weighted gather-sum of y's rows through row_of_pair.
template <typename T>
void LaunchGatherSum(const T* y, const int32_t* row_of_pair, const float* weights, int k,
                     int64_t tokens, int64_t hidden, T* out, Stream& stream) {
  const int grid = RowGrid(tokens, stream);
  const cudaStream_t s = Native(stream);
  WithPackWidth<T>({y, out}, hidden, [&](auto width) {
    GatherSumKernel<T, decltype(width)::value>
        <<<grid, kRowThreads, 0, s>>>(y, row_of_pair, weights, k, tokens, hidden, out);
    MF_CUDA_CHECK_LAUNCH();
  });
}

// Shapes of the unpermute pair: T and k from weights, H from y.
struct UnpermuteDims {
  int64_t tokens, k, hidden;
};

// y (rows, H) activation with one row per entry of `sorted`, weights (T, k) f32, on the stream's
// GPU: the inputs both directions share.
UnpermuteDims CheckUnpermute(const Tensor& y, const Tensor& sorted, const Tensor& weights,
                             const Stream& stream, const char* op) {
  const Device dev = y.device();
  CheckStream(stream, dev, op);
  CheckActivation(y, dev, op, "y");
  CheckRank(y, 2, op, "y");
  CheckOn(weights, dev, op, "weights");
  CheckDType(weights, DType::kF32, op, "weights");
  CheckRank(weights, 2, op, "weights");
  CheckSorted(sorted, dev, op);
  const UnpermuteDims d{weights.dim(0), weights.dim(1), y.dim(1)};
  CheckShape(y, {sorted.numel(), d.hidden}, op, "y");
  return d;
}

}  // namespace

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
  MF_DISPATCH_FLOAT(d_out.dtype(), kOp, T,
                    LaunchGatherSum<T>(d_out.data<T>(), row_of_pair.data<int32_t>(), nullptr, k,
                                       tokens, hidden, d_x->data<T>(), stream));
}

void UnpermuteTokens(const Tensor& y, const Tensor& sorted, const Tensor& weights, Tensor* out,
                     Stream& stream) {
  constexpr const char* kOp = "UnpermuteTokens";
  const UnpermuteDims d = CheckUnpermute(y, sorted, weights, stream, kOp);
  const int64_t tokens = d.tokens, k = d.k, hidden = d.hidden;
  CheckOut(out, y.device(), y.dtype(), {tokens, hidden}, kOp, "out");
  if (tokens == 0 || hidden == 0) return;
  Tensor row_of_pair = RowOfPair(sorted, tokens * k, stream);
  MF_DISPATCH_FLOAT(
      y.dtype(), kOp, T,
      LaunchGatherSum<T>(y.data<T>(), row_of_pair.data<int32_t>(), weights.data<float>(),
                         static_cast<int>(k), tokens, hidden, out->data<T>(), stream));
}

void UnpermuteTokensBackward(const Tensor& d_out, const Tensor& y, const Tensor& sorted,
                             const Tensor& weights, Tensor* d_y, Tensor* d_weights,
                             Stream& stream) {
  constexpr const char* kOp = "UnpermuteTokensBackward";
  const UnpermuteDims d = CheckUnpermute(y, sorted, weights, stream, kOp);
  const int64_t tokens = d.tokens, k = d.k, hidden = d.hidden;
  const Device dev = y.device();
  const int64_t rows = sorted.numel();
  CheckIn(d_out, dev, y.dtype(), {tokens, hidden}, kOp, "d_out");
  CheckOut(d_y, dev, y.dtype(), y.shape(), kOp, "d_y");
  CheckOut(d_weights, dev, DType::kF32, weights.shape(), kOp, "d_weights");
  d_weights->SetZero(stream);  // a dropped pair has no row and so no gradient
  if (rows == 0) return;
  const int grid = RowGrid(rows, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(y.dtype(), kOp, T, {
    const T* pg = d_out.data<T>();
    const T* py = y.data<T>();
    T* pdy = d_y->data<T>();
    const int32_t* ps = sorted.data<int32_t>();
    const float* pw = weights.data<float>();
    float* pdw = d_weights->data<float>();
    WithPackWidth<T>({pg, py, pdy}, hidden, [&](auto width) {
      UnpermuteBackwardKernel<T, decltype(width)::value><<<grid, kRowThreads, 0, s>>>(
          pg, py, ps, pw, static_cast<int>(k), tokens * k, rows, hidden, pdy, pdw);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

void CountExpertsPerUnit(const Tensor& ids, int64_t first_row, int64_t unit_rows, Tensor* counts,
                         Stream& stream) {
  constexpr const char* kOp = "CountExpertsPerUnit";
  const Device dev = ids.device();
  CheckStream(stream, dev, kOp);
  // Shapes, ranks and the unit range were checked by the public op (ops/cpu/moe.cc).
  CheckOn(ids, dev, kOp, "ids");
  CheckDType(ids, DType::kI32, kOp, "ids");
  CheckOn(*counts, dev, kOp, "counts");
  CheckDType(*counts, DType::kF32, kOp, "counts");
  const int64_t tokens = ids.dim(0), k = ids.dim(1);
  const int64_t units = counts->dim(0), experts = counts->dim(1);
  MF_CHECK(experts > 0 && experts <= kMaxSharedBins)
      << kOp << ": counts needs 1 to " << kMaxSharedBins << " experts, got "
      << counts->DebugString();
  MF_CHECK(units <= int64_t{INT32_MAX}) << kOp << ": " << units << " units";
  if (units == 0) return;
  const cudaStream_t s = Native(stream);
  if (tokens == 0 || k == 0) {  // no pairs: every count is 0 (all-zero bits are 0.0f)
    MF_CUDA_CHECK(cudaMemsetAsync(counts->raw_data(), 0, counts->nbytes(), s));
    return;
  }
  // Splits per unit: enough blocks that none histograms more than kPairsPerCountBlock pairs.
  const int64_t unit_pairs = std::min(unit_rows, tokens) * k;
  const int64_t splits =
      std::min<int64_t>((unit_pairs + kPairsPerCountBlock - 1) / kPairsPerCountBlock, 65535);
  const dim3 grid(static_cast<unsigned>(units), static_cast<unsigned>(splits));
  const size_t shared = sizeof(int) * static_cast<size_t>(experts);
  if (splits == 1) {
    CountPerUnitKernel<true><<<grid, kCountThreads, shared, s>>>(
        ids.data<int32_t>(), tokens, static_cast<int>(k), static_cast<int>(experts), first_row,
        unit_rows, nullptr, counts->data<float>());
    MF_CUDA_CHECK_LAUNCH();
    return;
  }
  Tensor partial = Scratch({units, experts}, DType::kI32, stream);
  MF_CUDA_CHECK(cudaMemsetAsync(partial.raw_data(), 0, partial.nbytes(), s));
  CountPerUnitKernel<false><<<grid, kCountThreads, shared, s>>>(
      ids.data<int32_t>(), tokens, static_cast<int>(k), static_cast<int>(experts), first_row,
      unit_rows, partial.data<int32_t>(), counts->data<float>());
  MF_CUDA_CHECK_LAUNCH();
  const int64_t n = units * experts;
  CountsToF32<<<DeviceGrid(n, kIndexThreads, kIndexThreads, stream), kIndexThreads, 0, s>>>(
      partial.data<int32_t>(), n, counts->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
