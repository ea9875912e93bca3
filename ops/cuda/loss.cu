// CUDA fused cross entropy: one block per token row (grid-stride over rows) reads the logits once
// with an online max/sum (no f32 softmax is ever stored), writing the token loss and lse; backward
// writes g·(softmax − onehot) in the logits' dtype, in place if d_logits aliases logits. Rows move
// in 16-byte packs when pointers and V allow, single elements otherwise. A target outside [-1, V)
// traps the kernel after printing it. A vocabulary shard runs the same row pass, writing its
// (max, Σexp, target logit) partials instead, and a thread per row merges every shard's partials;
// its backward is the same kernel with the one-hot shifted to the shard (targets below -1 trap).
// Per-sample loss sums and their mean run on the device too (fixed summation order), so the loss
// needs no host copy inside the step.
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kSampleThreads = 256;
constexpr int32_t kIgnoreTarget = -1;

__device__ __forceinline__ void CheckTarget(int32_t target, int64_t vocab, int64_t row) {
  if (target != kIgnoreTarget && (target < 0 || target >= vocab)) {
    printf("moefold CrossEntropy: target %d at row %lld outside [0, V=%lld) (-1 = ignore)\n",
           target, static_cast<long long>(row), static_cast<long long>(vocab));
    __trap();
  }
}

// A shard's targets are global ids: only those below −1 are known to be wrong here.
__device__ __forceinline__ void CheckShardTarget(int32_t target, int64_t row) {
  if (target < kIgnoreTarget) {
    printf("moefold CrossEntropyShard: target %d at row %lld is negative (-1 = ignore)\n", target,
           static_cast<long long>(row));
    __trap();
  }
}

// Merges two (max, Σ exp(x − max)) pairs.
__device__ __forceinline__ void Merge(float& m, float& s, float m2, float s2) {
  const float mm = fmaxf(m, m2);
  if (mm == -INFINITY) return;  // both empty
  s = s * expf(m - mm) + s2 * expf(m2 - mm);
  m = mm;
}

// The row's (max m, Σ exp(x − m)) over `packs` packs of N, by the whole block (every thread must
// call it: it synchronises the block); the result is valid in thread 0. An empty row gives
// (−inf, 0).
template <typename T, int N>
__device__ __forceinline__ void BlockRowMaxSumExp(const T* l, int64_t packs, float& m, float& s) {
  __shared__ float shared_m[32], shared_s[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  m = -INFINITY;
  s = 0.0f;
  ForEachPack(
      threadIdx.x, packs, blockDim.x, [&](int64_t i) { return LoadPack<N>(l + i * N); },
      [&](int64_t, const Pack<T, N>& p) {
#pragma unroll
        for (int e = 0; e < N; ++e) {
          const float x = ToF32(p.v[e]);
          if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
          } else if (x != -INFINITY) {
            // A −inf logit adds exp(−inf) = 0; skipping it avoids exp(−inf − (−inf)) = NaN when
            // it is the thread's first value (m still −inf). NaN logits still propagate.
            s += expf(x - m);
          }
        }
      });
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    Merge(m, s, m2, s2);
  }
  if (lane == 0) {
    shared_m[warp] = m;
    shared_s[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    const bool has = lane < static_cast<int>(blockDim.x / 32);
    m = has ? shared_m[lane] : -INFINITY;
    s = has ? shared_s[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
      const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
      Merge(m, s, m2, s2);
    }
  }
  __syncthreads();  // warp 0 has read shared_m/shared_s before the next row rewrites them
}

template <typename T, int N>
__global__ void CrossEntropyForwardKernel(const T* logits, const int32_t* targets, int64_t rows,
                                          int64_t vocab, float* token_losses, float* lse) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* l = logits + row * vocab;
    float m, s;
    BlockRowMaxSumExp<T, N>(l, vocab / N, m, s);
    if (threadIdx.x == 0) {
      const int32_t target = targets[row];
      CheckTarget(target, vocab, row);
      const float row_lse = m + logf(s);
      lse[row] = row_lse;
      token_losses[row] = target == kIgnoreTarget ? 0.0f : row_lse - ToF32(l[target]);
    }
  }
}

// partials (3, rows): the shard's row max, Σ exp(x − max) and the target's logit (0 when the
// target is in another shard or ignored).
template <typename T, int N>
__global__ void CrossEntropyShardPartialsKernel(const T* logits, const int32_t* targets,
                                                int64_t rows, int64_t vocab, int64_t first_id,
                                                float* partials) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* l = logits + row * vocab;
    float m, s;
    BlockRowMaxSumExp<T, N>(l, vocab / N, m, s);
    if (threadIdx.x == 0) {
      const int32_t target = targets[row];
      CheckShardTarget(target, row);
      const int64_t local = int64_t{target} - first_id;
      const bool mine = target != kIgnoreTarget && local >= 0 && local < vocab;
      partials[row] = m;
      partials[rows + row] = s;
      partials[2 * rows + row] = mine ? ToF32(l[local]) : 0.0f;
    }
  }
}

// One thread per row merges the R shards' partials (R, 3, rows), in shard order.
__global__ void CrossEntropyFromShardPartialsKernel(const float* partials, int64_t shards,
                                                    int64_t rows, const int32_t* targets,
                                                    float* token_losses, float* lse) {
  for (int64_t row = FirstThread(); row < rows; row += GridThreads()) {
    const int32_t target = targets[row];
    CheckShardTarget(target, row);
    float m = -INFINITY;
    for (int64_t r = 0; r < shards; ++r) m = fmaxf(m, partials[r * 3 * rows + row]);
    float sum = 0.0f, target_logit = 0.0f;
    for (int64_t r = 0; r < shards; ++r) {
      const float m_r = partials[r * 3 * rows + row];
      // A shard without columns (−inf, 0) adds nothing; skipping it keeps exp(−inf − (−inf))
      // out when no shard has a finite logit.
      if (m_r != -INFINITY) sum += partials[(r * 3 + 1) * rows + row] * expf(m_r - m);
      target_logit += partials[(r * 3 + 2) * rows + row];
    }
    const float row_lse = m + logf(sum);
    lse[row] = row_lse;
    token_losses[row] = target == kIgnoreTarget ? 0.0f : row_lse - target_logit;
  }
}

// With kShard the logits are the columns [first_id, first_id + vocab) of a larger vocabulary:
// the one-hot sits at target − first_id (nowhere when the target is another shard's).
template <typename T, int N, bool kShard>
__global__ void CrossEntropyBackwardKernel(const T* logits, const int32_t* targets,
                                           const float* lse, const float* d_losses, int64_t rows,
                                           int64_t vocab, int64_t first_id, T* d_logits) {
  const int64_t packs = vocab / N;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int32_t target = targets[row];
    if constexpr (kShard) {
      CheckShardTarget(target, row);
    } else {
      CheckTarget(target, vocab, row);
    }
    const int64_t local = int64_t{target} - first_id;
    const float g = target == kIgnoreTarget ? 0.0f : d_losses[row];
    const float row_lse = lse[row];
    const T* l = logits + row * vocab;
    T* d = d_logits + row * vocab;
    ForEachPack(
        threadIdx.x, packs, blockDim.x, [&](int64_t i) { return LoadPack<N>(l + i * N); },
        [&](int64_t i, const Pack<T, N>& p) {
          Pack<T, N> out;
#pragma unroll
          for (int e = 0; e < N; ++e) {
            const int64_t v = i * N + e;
            const float prob = expf(ToF32(p.v[e]) - row_lse);
            out.v[e] = FromF32<T>(g * (prob - (v == local ? 1.0f : 0.0f)));
          }
          StorePack<N>(d + i * N, out);
        });
  }
}

// sums[0][b] = Σ_s losses of sample b's tokens with a target, sums[1][b] = their count; one block
// per sample (grid-stride), f32 block sums in a fixed order.
__global__ void SampleLossSumsKernel(const float* losses, const int32_t* targets, int64_t samples,
                                     int64_t seq, float* sums) {
  for (int64_t b = blockIdx.x; b < samples; b += gridDim.x) {
    float sum = 0.0f;
    int count = 0;
    for (int64_t s = threadIdx.x; s < seq; s += blockDim.x) {
      if (targets[b * seq + s] != kIgnoreTarget) {
        sum += losses[b * seq + s];
        ++count;
      }
    }
    sum = BlockSum(sum);
    count = BlockSum(count);
    if (threadIdx.x == 0) {
      sums[b] = sum;
      sums[samples + b] = static_cast<float>(count);
    }
  }
}

// total += Σ_b (count_b > 0 ? sum_b / count_b : 0), in b order by one thread: the same float
// operations as the CPU reference, so the result is bit-identical.
__global__ void AccumulateSampleMeansKernel(const float* sums, int64_t samples, float* total) {
  float mean_sum = 0.0f;
  for (int64_t b = 0; b < samples; ++b) {
    const float count = sums[samples + b];
    mean_sum += count > 0.0f ? sums[b] / count : 0.0f;
  }
  *total += mean_sum;
}

void CheckTargets(const Tensor& logits, const Tensor& targets, const Stream& stream,
                  const char* op) {
  CheckStream(stream, logits.device(), op);
  CheckActivation(logits, logits.device(), op, "logits");
  CheckRank(logits, 2, op, "logits");
  CheckIn(targets, logits.device(), DType::kI32, {logits.dim(0)}, op, "targets");
}

int RowGrid(int64_t rows, const Stream& stream) { return DeviceGrid(rows, 1, kThreads, stream); }

// The backward of the whole vocabulary (kShard false, first_id 0) and of a shard.
template <bool kShard>
void Backward(const Tensor& logits, const Tensor& targets, int64_t first_id, const Tensor& lse,
              const Tensor& d_token_losses, Tensor* d_logits, Stream& stream, const char* op) {
  CheckTargets(logits, targets, stream, op);
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  CheckIn(lse, logits.device(), DType::kF32, {rows}, op, "lse");
  CheckIn(d_token_losses, logits.device(), DType::kF32, {rows}, op, "d_token_losses");
  CheckOut(d_logits, logits.device(), logits.dtype(), logits.shape(), op, "d_logits");
  if (rows == 0 || vocab == 0) return;
  const int grid = RowGrid(rows, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(logits.dtype(), op, T, {
    const T* pl = logits.data<T>();
    T* pd = d_logits->data<T>();
    const int32_t* pt = targets.data<int32_t>();
    WithPackWidth<T>({pl, pd}, vocab, [&](auto width) {
      CrossEntropyBackwardKernel<T, decltype(width)::value, kShard><<<grid, kThreads, 0, s>>>(
          pl, pt, lse.data<float>(), d_token_losses.data<float>(), rows, vocab, first_id, pd);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

void CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor* token_losses,
                         Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "CrossEntropyForward";
  CheckTargets(logits, targets, stream, kOp);
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  CheckOut(token_losses, logits.device(), DType::kF32, {rows}, kOp, "token_losses");
  CheckOut(lse, logits.device(), DType::kF32, {rows}, kOp, "lse");
  if (rows == 0) return;
  const int grid = RowGrid(rows, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(logits.dtype(), kOp, T, {
    const T* pl = logits.data<T>();
    const int32_t* pt = targets.data<int32_t>();
    WithPackWidth<T>({pl}, vocab, [&](auto width) {
      CrossEntropyForwardKernel<T, decltype(width)::value><<<grid, kThreads, 0, s>>>(
          pl, pt, rows, vocab, token_losses->data<float>(), lse->data<float>());
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                          const Tensor& d_token_losses, Tensor* d_logits, Stream& stream) {
  Backward<false>(logits, targets, 0, lse, d_token_losses, d_logits, stream,
                  "CrossEntropyBackward");
}

void CrossEntropyShardPartials(const Tensor& logits, const Tensor& targets, int64_t first_id,
                               Tensor* partials, Stream& stream) {
  constexpr const char* kOp = "CrossEntropyShardPartials";
  CheckTargets(logits, targets, stream, kOp);
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  CheckOut(partials, logits.device(), DType::kF32, {3, rows}, kOp, "partials");
  if (rows == 0) return;
  // A shard without columns still writes its (−inf, 0, 0) partials: no pack is loaded.
  const int grid = RowGrid(rows, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(logits.dtype(), kOp, T, {
    const T* pl = logits.data<T>();
    const int32_t* pt = targets.data<int32_t>();
    WithPackWidth<T>({pl}, vocab, [&](auto width) {
      CrossEntropyShardPartialsKernel<T, decltype(width)::value>
          <<<grid, kThreads, 0, s>>>(pl, pt, rows, vocab, first_id, partials->data<float>());
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

void CrossEntropyFromShardPartials(const Tensor& partials, const Tensor& targets,
                                   Tensor* token_losses, Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "CrossEntropyFromShardPartials";
  const Device dev = partials.device();
  CheckStream(stream, dev, kOp);
  CheckOn(partials, dev, kOp, "partials");
  CheckDType(partials, DType::kF32, kOp, "partials");
  CheckRank(partials, 3, kOp, "partials");
  MF_CHECK_EQ(partials.dim(1), 3) << kOp << ": partials must be (R, 3, N), got "
                                  << partials.DebugString();
  const int64_t shards = partials.dim(0), rows = partials.dim(2);
  CheckIn(targets, dev, DType::kI32, {rows}, kOp, "targets");
  CheckOut(token_losses, dev, DType::kF32, {rows}, kOp, "token_losses");
  CheckOut(lse, dev, DType::kF32, {rows}, kOp, "lse");
  if (rows == 0) return;
  CrossEntropyFromShardPartialsKernel<<<DeviceGrid(rows, kSampleThreads, kSampleThreads, stream),
                                        kSampleThreads, 0, Native(stream)>>>(
      partials.data<float>(), shards, rows, targets.data<int32_t>(), token_losses->data<float>(),
      lse->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void CrossEntropyShardBackward(const Tensor& logits, const Tensor& targets, int64_t first_id,
                               const Tensor& lse, const Tensor& d_token_losses, Tensor* d_logits,
                               Stream& stream) {
  Backward<true>(logits, targets, first_id, lse, d_token_losses, d_logits, stream,
                 "CrossEntropyShardBackward");
}

void SampleLossSums(const Tensor& token_losses, const Tensor& targets, Tensor* sums,
                    Stream& stream) {
  constexpr const char* kOp = "SampleLossSums";
  const Device dev = token_losses.device();
  CheckStream(stream, dev, kOp);
  // Shapes were checked by the public op (ops/cpu/loss.cc).
  CheckOn(token_losses, dev, kOp, "token_losses");
  CheckDType(token_losses, DType::kF32, kOp, "token_losses");
  CheckOn(targets, dev, kOp, "targets");
  CheckDType(targets, DType::kI32, kOp, "targets");
  CheckOn(*sums, dev, kOp, "sums");
  CheckDType(*sums, DType::kF32, kOp, "sums");
  const int64_t samples = sums->dim(1), seq = samples > 0 ? token_losses.numel() / samples : 0;
  if (samples == 0) return;
  SampleLossSumsKernel<<<DeviceGrid(samples, 1, kSampleThreads, stream), kSampleThreads, 0,
                         Native(stream)>>>(token_losses.data<float>(), targets.data<int32_t>(),
                                           samples, seq, sums->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

void AccumulateSampleMeans(const Tensor& sums, Tensor* total, Stream& stream) {
  constexpr const char* kOp = "AccumulateSampleMeans";
  const Device dev = sums.device();
  CheckStream(stream, dev, kOp);
  CheckOn(sums, dev, kOp, "sums");
  CheckDType(sums, DType::kF32, kOp, "sums");
  CheckRank(sums, 2, kOp, "sums");
  MF_CHECK_EQ(sums.dim(0), 2) << kOp << ": sums must be (2, B), got " << sums.DebugString();
  CheckOut(total, dev, DType::kF32, {1}, kOp, "total");
  AccumulateSampleMeansKernel<<<1, 1, 0, Native(stream)>>>(sums.data<float>(), sums.dim(1),
                                                           total->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
