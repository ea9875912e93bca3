// CUDA fused cross entropy: one block per token row reads the logits once with an online
// max/sum (no f32 softmax is ever stored), writing the token loss and lse; backward writes
// g·(softmax − onehot) in the logits' dtype, in place if d_logits aliases logits. A target outside
// [-1, V) traps the kernel after printing it.
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int32_t kIgnoreTarget = -1;

__device__ __forceinline__ void CheckTarget(int32_t target, int64_t vocab, int64_t row) {
  if (target != kIgnoreTarget && (target < 0 || target >= vocab)) {
    printf("moefold CrossEntropy: target %d at row %lld outside [0, V=%lld) (-1 = ignore)\n",
           target, static_cast<long long>(row), static_cast<long long>(vocab));
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

template <typename T>
__global__ void CrossEntropyForwardKernel(const T* logits, const int32_t* targets, int64_t vocab,
                                          float* token_losses, float* lse) {
  __shared__ float shared_m[32], shared_s[32];
  const int64_t row = blockIdx.x;
  const T* l = logits + row * vocab;
  float m = -INFINITY, s = 0.0f;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float x = ToF32(l[v]);
    if (x > m) {
      s = s * expf(m - x) + 1.0f;
      m = x;
    } else if (x != -INFINITY) {
      // A −inf logit adds exp(−inf) = 0; skipping it avoids exp(−inf − (−inf)) = NaN when it is
      // the thread's first value (m still −inf). NaN logits still propagate.
      s += expf(x - m);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    Merge(m, s, m2, s2);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
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
    if (lane == 0) {
      const int32_t target = targets[row];
      CheckTarget(target, vocab, row);
      const float row_lse = m + logf(s);
      lse[row] = row_lse;
      token_losses[row] = target == kIgnoreTarget ? 0.0f : row_lse - ToF32(l[target]);
    }
  }
}

template <typename T>
__global__ void CrossEntropyBackwardKernel(const T* logits, const int32_t* targets,
                                           const float* lse, const float* d_losses, int64_t vocab,
                                           T* d_logits) {
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  CheckTarget(target, vocab, row);
  const float g = target == kIgnoreTarget ? 0.0f : d_losses[row];
  const float row_lse = lse[row];
  const T* l = logits + row * vocab;
  T* d = d_logits + row * vocab;
  for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) {
    const float p = expf(ToF32(l[v]) - row_lse);
    d[v] = FromF32<T>(g * (p - (v == target ? 1.0f : 0.0f)));
  }
}

void CheckTargets(const Tensor& logits, const Tensor& targets, const Stream& stream,
                  const char* op) {
  CheckStream(stream, logits.device(), op);
  CheckActivation(logits, logits.device(), op, "logits");
  CheckRank(logits, 2, op, "logits");
  CheckOn(targets, logits.device(), op, "targets");
  CheckDType(targets, DType::kI32, op, "targets");
  CheckShape(targets, {logits.dim(0)}, op, "targets");
}

void CheckF32(const Tensor& t, const Shape& shape, const Device& dev, const char* op,
              const char* name) {
  CheckOn(t, dev, op, name);
  CheckDType(t, DType::kF32, op, name);
  CheckShape(t, shape, op, name);
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
  MF_DISPATCH_FLOAT(logits.dtype(), kOp, T,
                    CrossEntropyForwardKernel<T>
                    <<<static_cast<unsigned>(rows), kThreads, 0, Native(stream)>>>(
                        logits.data<T>(), targets.data<int32_t>(), vocab,
                        token_losses->data<float>(), lse->data<float>()));
  MF_CUDA_CHECK_LAUNCH();
}

void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                          const Tensor& d_token_losses, Tensor* d_logits, Stream& stream) {
  constexpr const char* kOp = "CrossEntropyBackward";
  CheckTargets(logits, targets, stream, kOp);
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  CheckF32(lse, {rows}, logits.device(), kOp, "lse");
  CheckF32(d_token_losses, {rows}, logits.device(), kOp, "d_token_losses");
  CheckOut(d_logits, logits.device(), logits.dtype(), logits.shape(), kOp, "d_logits");
  if (rows == 0) return;
  MF_DISPATCH_FLOAT(logits.dtype(), kOp, T,
                    CrossEntropyBackwardKernel<T>
                    <<<static_cast<unsigned>(rows), kThreads, 0, Native(stream)>>>(
                        logits.data<T>(), targets.data<int32_t>(), lse.data<float>(),
                        d_token_losses.data<float>(), vocab, d_logits->data<T>()));
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
