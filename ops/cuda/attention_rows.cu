// Row kernels of GQA attention over a query block and a key/value block (causal or full): one warp
// per query row (forward with an online softmax; d_q and Δ = ⟨d_out, out⟩) or per key row (d_k,
// d_v summed over the group's query heads, so no atomics). f32 math for f32 or bf16 tensors, head
// dim ≤ 256; the reference-like fallback to the flash kernels, quadratic in S with little reuse.
#include "ops/cuda/attention_kernels.h"
#include "ops/cuda/common.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kPerLane = kRowAttentionMaxHeadDim / 32;

struct Dims {
  int64_t batch, q_seq, kv_seq, q_heads, kv_heads, dim;
  bool causal;
};

__device__ __forceinline__ int64_t RowOffset(int64_t b, int64_t s, int64_t h, int64_t seq,
                                             int64_t heads, int64_t dim) {
  return ((b * seq + s) * heads + h) * dim;
}

template <typename T>
__device__ __forceinline__ void LoadRow(const T* p, int64_t dim, int lane, float (&r)[kPerLane]) {
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const int64_t c = lane + 32 * u;
    r[u] = c < dim ? ToF32(p[c]) : 0.0f;
  }
}

template <typename T>
__device__ __forceinline__ float DotRow(const float (&r)[kPerLane], const T* p, int64_t dim,
                                        int lane) {
  float dot = 0.0f;
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const int64_t c = lane + 32 * u;
    if (c < dim) dot += r[u] * ToF32(p[c]);
  }
  return WarpSum(dot);
}

// p[c] = value, or p[c] += value when accumulating (f32 gradients of the block op).
template <typename G>
__device__ __forceinline__ void StoreGrad(G* p, float value, bool accumulate) {
  p[0] = FromF32<G>(accumulate ? ToF32(p[0]) + value : value);
}

// O: out's element type (T, or float for the block op's partial).
template <typename T, typename O>
__global__ void RowForwardKernel(const T* q, const T* k, const T* v, Dims d, float scale, O* out,
                                 float* lse) {
  const int64_t row = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= d.batch * d.q_heads * d.q_seq) return;  // the whole warp leaves together
  const int64_t i = row % d.q_seq, h = (row / d.q_seq) % d.q_heads, b = row / (d.q_seq * d.q_heads);
  const int64_t kvh = h / (d.q_heads / d.kv_heads);
  float qr[kPerLane], acc[kPerLane];
  LoadRow(q + RowOffset(b, i, h, d.q_seq, d.q_heads, d.dim), d.dim, lane, qr);
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) acc[u] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int64_t end = d.causal ? i + 1 : d.kv_seq;
  for (int64_t j = 0; j < end; ++j) {
    const int64_t kv = RowOffset(b, j, kvh, d.kv_seq, d.kv_heads, d.dim);
    const float s = scale * DotRow(qr, k + kv, d.dim, lane);
    const float m_new = fmaxf(m, s);
    const float correction = expf(m - m_new);
    const float p = expf(s - m_new);
    l = l * correction + p;
#pragma unroll
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t c = lane + 32 * u;
      if (c < d.dim) acc[u] = acc[u] * correction + p * ToF32(v[kv + c]);
    }
    m = m_new;
  }
  O* o = out + RowOffset(b, i, h, d.q_seq, d.q_heads, d.dim);
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const int64_t c = lane + 32 * u;
    // An empty key block (Skv = 0) gives out = 0 and lse = −inf, as the merge op expects.
    if (c < d.dim) o[c] = FromF32<O>(l > 0.0f ? acc[u] / l : 0.0f);
  }
  if (lane == 0) lse[row] = m + logf(l);
}

// d_q_i = scale·Σ_j P_ij (dP_ij − Δ_i) k_j over the visible keys; also stores Δ_i for the key-row
// kernel.
template <typename T, typename G>
__global__ void RowBackwardDqKernel(const T* q, const T* k, const T* v, const T* out,
                                    const float* lse, const T* d_out, Dims d, float scale,
                                    bool accumulate, G* d_q, float* delta) {
  const int64_t row = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= d.batch * d.q_heads * d.q_seq) return;
  const int64_t i = row % d.q_seq, h = (row / d.q_seq) % d.q_heads, b = row / (d.q_seq * d.q_heads);
  const int64_t kvh = h / (d.q_heads / d.kv_heads);
  const int64_t qoff = RowOffset(b, i, h, d.q_seq, d.q_heads, d.dim);
  float qr[kPerLane], dor[kPerLane], dq[kPerLane];
  LoadRow(q + qoff, d.dim, lane, qr);
  LoadRow(d_out + qoff, d.dim, lane, dor);
  const float dlt = DotRow(dor, out + qoff, d.dim, lane);
  if (lane == 0) delta[row] = dlt;
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) dq[u] = 0.0f;
  const float row_lse = lse[row];
  const int64_t end = d.causal ? i + 1 : d.kv_seq;
  for (int64_t j = 0; j < end; ++j) {
    const int64_t kv = RowOffset(b, j, kvh, d.kv_seq, d.kv_heads, d.dim);
    const float p = expf(scale * DotRow(qr, k + kv, d.dim, lane) - row_lse);
    const float ds = p * (DotRow(dor, v + kv, d.dim, lane) - dlt);
#pragma unroll
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t c = lane + 32 * u;
      if (c < d.dim) dq[u] += scale * ds * ToF32(k[kv + c]);
    }
  }
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const int64_t c = lane + 32 * u;
    if (c < d.dim) StoreGrad(d_q + qoff + c, dq[u], accumulate);
  }
}

// d_k_j = scale·Σ P_ij (dP_ij − Δ_i) q_i, d_v_j = Σ P_ij d_out_i over the group's heads and the
// queries that see key j.
template <typename T, typename G>
__global__ void RowBackwardDkDvKernel(const T* q, const T* k, const T* v, const float* lse,
                                      const float* delta, const T* d_out, Dims d, float scale,
                                      bool accumulate, G* d_k, G* d_v) {
  const int64_t row = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= d.batch * d.kv_heads * d.kv_seq) return;
  const int64_t j = row % d.kv_seq, kvh = (row / d.kv_seq) % d.kv_heads,
                b = row / (d.kv_seq * d.kv_heads);
  const int64_t group = d.q_heads / d.kv_heads;
  const int64_t kv = RowOffset(b, j, kvh, d.kv_seq, d.kv_heads, d.dim);
  float kr[kPerLane], vr[kPerLane], dk[kPerLane], dv[kPerLane];
  LoadRow(k + kv, d.dim, lane, kr);
  LoadRow(v + kv, d.dim, lane, vr);
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) dk[u] = dv[u] = 0.0f;
  for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
    for (int64_t i = d.causal ? j : 0; i < d.q_seq; ++i) {
      const int64_t qoff = RowOffset(b, i, h, d.q_seq, d.q_heads, d.dim);
      const int64_t stat = (b * d.q_heads + h) * d.q_seq + i;
      const float p = expf(scale * DotRow(kr, q + qoff, d.dim, lane) - lse[stat]);
      const float ds = p * (DotRow(vr, d_out + qoff, d.dim, lane) - delta[stat]);
#pragma unroll
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t c = lane + 32 * u;
        if (c < d.dim) {
          dk[u] += scale * ds * ToF32(q[qoff + c]);
          dv[u] += p * ToF32(d_out[qoff + c]);
        }
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const int64_t c = lane + 32 * u;
    if (c < d.dim) {
      StoreGrad(d_k + kv + c, dk[u], accumulate);
      StoreGrad(d_v + kv + c, dv[u], accumulate);
    }
  }
}

unsigned WarpBlocks(int64_t rows) {
  return static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads);
}

Dims ToDims(const AttentionBlockDims& a) {
  return Dims{a.batch, a.q_seq, a.kv_seq, a.q_heads, a.kv_heads, a.head_dim, a.causal};
}

template <typename T, typename O>
void LaunchForward(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                   Tensor* out, Tensor* lse, const Stream& stream) {
  const int64_t rows = d.batch * d.q_heads * d.q_seq;
  RowForwardKernel<T, O><<<WarpBlocks(rows), kThreads, 0, Native(stream)>>>(
      q.data<T>(), k.data<T>(), v.data<T>(), d, scale, out->data<O>(), lse->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

template <typename T, typename G>
void LaunchBackward(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v,
                    const Tensor& out, const Tensor& lse, const Tensor& d_out, float scale,
                    bool accumulate, Tensor* d_q, Tensor* d_k, Tensor* d_v, const Stream& stream) {
  const int64_t q_rows = d.batch * d.q_heads * d.q_seq, kv_rows = d.batch * d.kv_heads * d.kv_seq;
  Tensor delta = Scratch({q_rows}, DType::kF32, stream);
  RowBackwardDqKernel<T, G><<<WarpBlocks(q_rows), kThreads, 0, Native(stream)>>>(
      q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<float>(), d_out.data<T>(), d,
      scale, accumulate, d_q->data<G>(), delta.data<float>());
  MF_CUDA_CHECK_LAUNCH();
  if (kv_rows == 0) return;  // an empty key block: nothing more to add
  RowBackwardDkDvKernel<T, G><<<WarpBlocks(kv_rows), kThreads, 0, Native(stream)>>>(
      q.data<T>(), k.data<T>(), v.data<T>(), lse.data<float>(), delta.data<float>(),
      d_out.data<T>(), d, scale, accumulate, d_k->data<G>(), d_v->data<G>());
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void RowAttentionForward(const AttentionBlockDims& a, const Tensor& q, const Tensor& k,
                         const Tensor& v, float scale, Tensor* out, Tensor* lse,
                         const Stream& stream) {
  const Dims d = ToDims(a);
  const bool f32_out = out->dtype() == DType::kF32;
  MF_DISPATCH_FLOAT(q.dtype(), "AttentionForward", T, {
    if (f32_out) {
      LaunchForward<T, float>(d, q, k, v, scale, out, lse, stream);
    } else {
      LaunchForward<T, T>(d, q, k, v, scale, out, lse, stream);
    }
  });
}

void RowAttentionBackward(const AttentionBlockDims& a, const Tensor& q, const Tensor& k,
                          const Tensor& v, const Tensor& out, const Tensor& lse,
                          const Tensor& d_out, float scale, bool accumulate, Tensor* d_q,
                          Tensor* d_k, Tensor* d_v, const Stream& stream) {
  const Dims d = ToDims(a);
  const bool f32_grads = d_q->dtype() == DType::kF32;
  MF_DISPATCH_FLOAT(q.dtype(), "AttentionBackward", T, {
    if (f32_grads) {
      LaunchBackward<T, float>(d, q, k, v, out, lse, d_out, scale, accumulate, d_q, d_k, d_v,
                               stream);
    } else {
      LaunchBackward<T, T>(d, q, k, v, out, lse, d_out, scale, accumulate, d_q, d_k, d_v, stream);
    }
  });
}

}  // namespace moefold::ops::cuda
