// CUDA kernels of the context-parallel helpers of the attention family: the online-softmax merge of
// two block partials (one warp per (batch, query, head) row, f32 math; an empty side, lse = −inf,
// is never read) and the leading-dimension swap into and out of chunk-major layout (a grid-stride
// copy with dtype conversion, coalesced along the contiguous last dimension on both sides).
#include "ops/cuda/check.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

// Rows (b, i, h) of out (B, S, H, D); statistics at (b, h, i) of lse (B, H, S).
template <typename A, typename B>
__global__ void MergeKernel(const A* out_a, const float* lse_a, const B* out_b, const float* lse_b,
                            int64_t seq, int64_t heads, int64_t dim, int64_t rows, float* out,
                            float* lse) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = GridThreads() / 32;
  for (int64_t row = FirstThread() / 32; row < rows; row += warps) {
    const int64_t h = row % heads, i = (row / heads) % seq, b = row / (heads * seq);
    const int64_t stat = (b * heads + h) * seq + i;
    const float la = lse_a[stat], lb = lse_b[stat];
    // Every lane has read the statistics before lane 0 may overwrite them (lse may alias).
    __syncwarp();
    const float hi = fmaxf(la, lb), lo = fminf(la, lb);
    // log(e^la + e^lb) = hi + log1p(e^(lo − hi)): exactly hi when one side is empty.
    const float merged = hi == -INFINITY ? -INFINITY : hi + log1pf(expf(lo - hi));
    const bool use_a = la != -INFINITY, use_b = lb != -INFINITY;
    const float wa = use_a ? expf(la - merged) : 0.0f, wb = use_b ? expf(lb - merged) : 0.0f;
    const int64_t at = row * dim;
    for (int64_t c = lane; c < dim; c += 32) {
      // An empty side is skipped, never multiplied (its out may hold NaN); out may alias a or b:
      // this lane reads element c before writing it.
      float o = 0.0f;
      if (use_a) o += wa * ToF32(out_a[at + c]);
      if (use_b) o += wb * ToF32(out_b[at + c]);
      out[at + c] = o;
    }
    if (lane == 0) lse[stat] = merged;
  }
}

// out (N, A, R) = x (A, N, R), converted from I to O.
template <typename I, typename O>
__global__ void SwapLeadingKernel(const I* x, int64_t a, int64_t n, int64_t r, O* out) {
  const int64_t total = a * n * r;
  for (int64_t e = FirstThread(); e < total; e += GridThreads()) {
    const int64_t c = e % r, ai = (e / r) % a, ni = e / (r * a);  // e indexes out
    out[e] = FromF32<O>(ToF32(x[(ai * n + ni) * r + c]));
  }
}

void CheckFloat(const Tensor& t, const Device& device, const char* op, const char* name) {
  CheckActivation(t, device, op, name);
}

}  // namespace

void AttentionMerge(const Tensor& out_a, const Tensor& lse_a, const Tensor& out_b,
                    const Tensor& lse_b, Tensor* out, Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "AttentionMerge";
  const Device dev = out_a.device();
  CheckStream(stream, dev, kOp);
  CheckFloat(out_a, dev, kOp, "out_a");
  CheckFloat(out_b, dev, kOp, "out_b");
  CheckRank(out_a, 4, kOp, "out_a");
  CheckShape(out_b, out_a.shape(), kOp, "out_b");
  const int64_t batch = out_a.dim(0), seq = out_a.dim(1), heads = out_a.dim(2), dim = out_a.dim(3);
  CheckIn(lse_a, dev, DType::kF32, {batch, heads, seq}, kOp, "lse_a");
  CheckIn(lse_b, dev, DType::kF32, lse_a.shape(), kOp, "lse_b");
  CheckOut(out, dev, DType::kF32, out_a.shape(), kOp, "out");
  CheckOut(lse, dev, DType::kF32, lse_a.shape(), kOp, "lse");
  const int64_t rows = batch * seq * heads;
  if (rows == 0) return;
  const int blocks = DeviceGrid(rows, kThreads / 32, kThreads, stream);
  MF_DISPATCH_FLOAT(out_a.dtype(), kOp, A, {
    MF_DISPATCH_FLOAT(out_b.dtype(), kOp, B, {
      MergeKernel<A, B><<<blocks, kThreads, 0, Native(stream)>>>(
          out_a.data<A>(), lse_a.data<float>(), out_b.data<B>(), lse_b.data<float>(), seq, heads,
          dim, rows, out->data<float>(), lse->data<float>());
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

void SwapLeadingDims(const Tensor& x, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "SwapLeadingDims";
  MF_CHECK(out != nullptr) << kOp << ": output out is null";
  const Device dev = x.device();
  CheckStream(stream, dev, kOp);
  CheckFloat(x, dev, kOp, "x");
  CheckFloat(*out, dev, kOp, "out");
  CheckRank(x, 3, kOp, "x");
  const int64_t a = x.dim(0), n = x.dim(1), r = x.dim(2);
  CheckShape(*out, {n, a, r}, kOp, "out");
  MF_CHECK(x.raw_data() != out->raw_data() || x.numel() == 0) << kOp << ": out aliases x";
  const int64_t total = x.numel();
  if (total == 0) return;
  const int blocks = DeviceGrid(total, kThreads, kThreads, stream);
  MF_DISPATCH_FLOAT(x.dtype(), kOp, I, {
    MF_DISPATCH_FLOAT(out->dtype(), kOp, O, {
      SwapLeadingKernel<I, O>
          <<<blocks, kThreads, 0, Native(stream)>>>(x.data<I>(), a, n, r, out->data<O>());
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace moefold::ops::cuda
