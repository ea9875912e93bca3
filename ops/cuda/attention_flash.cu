// Flash attention (FlashAttention-2 schedule) on the tensor cores: bf16 mma.sync.m16n8k16 with f32
// accumulators, fragments loaded by ldmatrix from padded shared tiles (row stride D + 8 halves:
// conflict-free). A query block (Sq rows) attends to a key/value block (Skv rows), causal (Sq ==
// Skv) or full. Forward: a CTA of 4 warps owns 64 query rows (16 per warp) and streams 64-key
// tiles with an online softmax in the log2 domain; P goes from accumulators to A fragments in
// registers; out is stored as bf16 or, for the block op's partials, f32. Backward: a CTA owns 64
// keys of one KV head, loops over the group's query heads and 32-query tiles (causal: from the
// diagonal on), keeps dK/dV in registers (no atomics), and adds dQ = dS·K into an f32 buffer with
// atomics. The single-sequence op rounds dQ (scaled at the end) and dK/dV to bf16; the block op
// adds them into its f32 gradients (dQ scaled before the atomics, straight into d_q).
#include <cuda_bf16.h>

#include "ops/cuda/attention_kernels.h"
#include "ops/cuda/common.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 128;   // 4 warps
constexpr int kBlockQ = 64;     // forward: query rows per CTA
constexpr int kBlockKv = 64;    // keys per tile (both passes)
constexpr int kBwdBlockQ = 32;  // backward: query rows per iteration
constexpr int kPad = 8;         // halves of padding per shared row
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct FlashParams {
  int q_seq, kv_seq, q_heads, kv_heads, group;
  bool causal;
  float scale;
};

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void Ldmatrix4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(p)));
}

__device__ __forceinline__ void Ldmatrix4Trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(p)));
}

// d += a·b for one m16n8k16 tile.
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 as a bf16 pair, `lo` (the lower column) in the low half.
__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// A fragment (16×16, rows row0.., cols col0..) of a row-major shared matrix with stride ld.
__device__ __forceinline__ void LoadA(uint32_t (&a)[4], const bf16* base, int ld, int row0,
                                      int col0) {
  const int lane = threadIdx.x % 32, mat = lane >> 3;
  Ldmatrix4(a, base + (row0 + (mat & 1) * 8 + (lane & 7)) * ld + col0 + (mat >> 1) * 8);
}

// B fragments of two n-tiles (n0..n0+15) × k0..k0+15 from a shared matrix stored [n][k]:
// tile n0 = (r[0], r[1]), tile n0 + 8 = (r[2], r[3]).
__device__ __forceinline__ void LoadBFromNK(uint32_t (&r)[4], const bf16* base, int ld, int n0,
                                            int k0) {
  const int lane = threadIdx.x % 32, mat = lane >> 3;
  Ldmatrix4(r, base + (n0 + (mat >> 1) * 8 + (lane & 7)) * ld + k0 + (mat & 1) * 8);
}

// The same from a shared matrix stored [k][n] (transposed on load).
__device__ __forceinline__ void LoadBFromKN(uint32_t (&r)[4], const bf16* base, int ld, int k0,
                                            int n0) {
  const int lane = threadIdx.x % 32, mat = lane >> 3;
  Ldmatrix4Trans(r, base + (k0 + (mat & 1) * 8 + (lane & 7)) * ld + n0 + (mat >> 1) * 8);
}

// rows × D halves from global rows `stride` apart into shared rows ld apart, 16 bytes per thread.
template <int D>
__device__ __forceinline__ void LoadTile(bf16* dst, const bf16* src, int64_t stride, int rows) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < rows * kChunks; i += blockDim.x) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    *reinterpret_cast<uint4*>(dst + r * (D + kPad) + c) =
        *reinterpret_cast<const uint4*>(src + r * stride + c);
  }
}

__device__ __forceinline__ float QuadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float QuadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int D>
constexpr int ForwardSharedBytes() {
  return (kBlockQ + 2 * kBlockKv) * (D + kPad) * 2;
}

// Two adjacent output columns of a row.
__device__ __forceinline__ void StorePair(bf16* p, float lo, float hi) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(lo, hi);
}
__device__ __forceinline__ void StorePair(float* p, float lo, float hi) {
  *reinterpret_cast<float2*>(p) = make_float2(lo, hi);
}

// OutT: bf16, or f32 for the block op's unrounded partial.
template <int D, typename OutT>
__global__ void __launch_bounds__(kThreads)
    FlashForwardKernel(const bf16* q, const bf16* k, const bf16* v, FlashParams p, OutT* out,
                       float* lse) {
  constexpr int ld = D + kPad;
  extern __shared__ __align__(16) unsigned char shared[];
  bf16* qs = reinterpret_cast<bf16*>(shared);
  bf16* ks = qs + kBlockQ * ld;
  bf16* vs = ks + kBlockKv * ld;
  const int qt = gridDim.x - 1 - blockIdx.x;  // the longest rows start first
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / p.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int64_t q_stride = int64_t{p.q_heads} * D, kv_stride = int64_t{p.kv_heads} * D;

  LoadTile<D>(qs, q + ((int64_t{b} * p.q_seq + qt * kBlockQ) * p.q_heads + h) * D, q_stride,
              kBlockQ);
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) LoadA(qf[kk], qs, ld, warp * 16, kk * 16);

  float o[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const float scale_log2 = p.scale * kLog2e;

  // Causal: key tiles up to the diagonal (Sq == Skv); full: every key tile.
  const int kt_end = p.causal ? qt + 1 : p.kv_seq / kBlockKv;
  for (int kt = 0; kt < kt_end; ++kt) {
    __syncthreads();  // the previous tile is no longer read
    const int64_t kv_row = (int64_t{b} * p.kv_seq + kt * kBlockKv) * p.kv_heads + kvh;
    LoadTile<D>(ks, k + kv_row * D, kv_stride, kBlockKv);
    LoadTile<D>(vs, v + kv_row * D, kv_stride, kBlockKv);
    __syncthreads();

    float s[kBlockKv / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBlockKv / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kBlockKv / 16; ++np) {
        uint32_t r[4];
        LoadBFromNK(r, ks, ld, np * 16, kk * 16);
        Mma(s[2 * np], qf[kk], r[0], r[1]);
        Mma(s[2 * np + 1], qf[kk], r[2], r[3]);
      }
    }
    // Scale into the log2 domain, mask above the diagonal (causal), online softmax per row (g,
    // g + 8).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kBlockKv / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = warp * 16 + g + (e >> 1) * 8, col = nt * 8 + 2 * t + (e & 1);
        float x = s[nt][e] * scale_log2;
        if (p.causal && kt == qt && col > row) x = -INFINITY;
        s[nt][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    }
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      // Finite: key 0 of a row is never masked (causal), nothing is (full).
      const float m_new = fmaxf(m[r], QuadMax(mx[r]));
      correction[r] = exp2f(m[r] - m_new);
      m[r] = m_new;
      l[r] *= correction[r];
    }
#pragma unroll
    for (int nt = 0; nt < kBlockKv / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = exp2f(s[nt][e] - m[e >> 1]);
        s[nt][e] = pe;
        l[e >> 1] += pe;
      }
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      o[dt][0] *= correction[0];
      o[dt][1] *= correction[0];
      o[dt][2] *= correction[1];
      o[dt][3] *= correction[1];
    }
    // O += P·V with P's accumulators reused as A fragments (16 keys per k-step).
#pragma unroll
    for (int kk = 0; kk < kBlockKv / 16; ++kk) {
      const uint32_t a[4] = {Pack(s[2 * kk][0], s[2 * kk][1]), Pack(s[2 * kk][2], s[2 * kk][3]),
                             Pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             Pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t r[4];
        LoadBFromKN(r, vs, ld, kk * 16, dp * 16);
        Mma(o[2 * dp], a, r[0], r[1]);
        Mma(o[2 * dp + 1], a, r[2], r[3]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float total = QuadSum(l[r]);
    const int s_idx = qt * kBlockQ + warp * 16 + g + r * 8;
    OutT* og = out + ((int64_t{b} * p.q_seq + s_idx) * p.q_heads + h) * D;
    const float inv = 1.0f / total;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      StorePair(og + dt * 8 + 2 * t, o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
    }
    if (t == 0) {
      lse[(int64_t{b} * p.q_heads + h) * p.q_seq + s_idx] = (m[r] + log2f(total)) * kLn2;
    }
  }
}

// Δ = ⟨d_out, out⟩ per (b, h, s) row, one warp each, stored (B, Hq, S).
template <int D>
__global__ void DeltaKernel(const bf16* out, const bf16* d_out, FlashParams p, int64_t rows,
                            float* delta) {
  const int64_t row = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t s = row % p.q_seq, h = (row / p.q_seq) % p.q_heads,
                b = row / (int64_t{p.q_seq} * p.q_heads);
  const int64_t off = ((b * p.q_seq + s) * p.q_heads + h) * D;
  float sum = 0.0f;
  for (int c = lane; c < D; c += 32) sum += ToF32(out[off + c]) * ToF32(d_out[off + c]);
  sum = WarpSum(sum);
  if (lane == 0) delta[row] = sum;
}

template <int D>
constexpr int BackwardSharedBytes() {
  return (2 * kBlockKv + 2 * kBwdBlockQ) * (D + kPad) * 2 + kBwdBlockQ * (kBlockKv + kPad) * 2 +
         2 * kBwdBlockQ * 4;
}

// dK and dV of a thread's two adjacent columns: rounded to bf16 (overwritten), or added to f32.
__device__ __forceinline__ void PutGradPair(bf16* p, float lo, float hi) { StorePair(p, lo, hi); }
__device__ __forceinline__ void PutGradPair(float* p, float lo, float hi) {
  const float2 old = *reinterpret_cast<const float2*>(p);
  *reinterpret_cast<float2*>(p) = make_float2(old.x + lo, old.y + hi);
}

// GradT: bf16 (dK/dV overwritten) or f32 (added to). dQ·dq_scale is added to dq_accum.
template <int D, typename GradT>
__global__ void __launch_bounds__(kThreads)
    FlashBackwardKernel(const bf16* q, const bf16* k, const bf16* v, const bf16* d_out,
                        const float* lse, const float* delta, FlashParams p, float dq_scale,
                        float* dq_accum, GradT* d_k, GradT* d_v) {
  constexpr int ld = D + kPad, ld_ds = kBlockKv + kPad, kDqCols = D / 4;
  extern __shared__ __align__(16) unsigned char shared[];
  bf16* ks = reinterpret_cast<bf16*>(shared);
  bf16* vs = ks + kBlockKv * ld;
  bf16* qs = vs + kBlockKv * ld;
  bf16* dos = qs + kBwdBlockQ * ld;
  bf16* dss = dos + kBwdBlockQ * ld;  // dS as [query][key]
  float* lse_s = reinterpret_cast<float*>(dss + kBwdBlockQ * ld_ds);
  float* delta_s = lse_s + kBwdBlockQ;
  const int kt = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int64_t q_stride = int64_t{p.q_heads} * D, kv_stride = int64_t{p.kv_heads} * D;
  const int64_t kv_row = (int64_t{b} * p.kv_seq + kt * kBlockKv) * p.kv_heads + kvh;
  LoadTile<D>(ks, k + kv_row * D, kv_stride, kBlockKv);
  LoadTile<D>(vs, v + kv_row * D, kv_stride, kBlockKv);

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[dt][e] = dv[dt][e] = 0.0f;
  }
  const float scale_log2 = p.scale * kLog2e;
  for (int h = kvh * p.group; h < (kvh + 1) * p.group; ++h) {
    // Causal: the query tiles from the diagonal on (Sq == Skv); full: all of them.
    for (int qt = p.causal ? kt * kBlockKv / kBwdBlockQ : 0; qt < p.q_seq / kBwdBlockQ; ++qt) {
      __syncthreads();  // the previous iteration's tiles (and dS) are no longer read
      const int64_t q_row = (int64_t{b} * p.q_seq + qt * kBwdBlockQ) * p.q_heads + h;
      LoadTile<D>(qs, q + q_row * D, q_stride, kBwdBlockQ);
      LoadTile<D>(dos, d_out + q_row * D, q_stride, kBwdBlockQ);
      if (threadIdx.x < kBwdBlockQ) {
        const int64_t stat = (int64_t{b} * p.q_heads + h) * p.q_seq + qt * kBwdBlockQ + threadIdx.x;
        lse_s[threadIdx.x] = lse[stat] * kLog2e;
        delta_s[threadIdx.x] = delta[stat];
      }
      __syncthreads();

      // Sᵀ = K_w·Qᵀ and dPᵀ = V_w·d_outᵀ: this warp's 16 keys × 32 queries.
      float st[kBwdBlockQ / 8][4], dpt[kBwdBlockQ / 8][4];
#pragma unroll
      for (int nt = 0; nt < kBwdBlockQ / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] = dpt[nt][e] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t ak[4], av[4];
        LoadA(ak, ks, ld, warp * 16, kk * 16);
        LoadA(av, vs, ld, warp * 16, kk * 16);
#pragma unroll
        for (int np = 0; np < kBwdBlockQ / 16; ++np) {
          uint32_t r[4];
          LoadBFromNK(r, qs, ld, np * 16, kk * 16);
          Mma(st[2 * np], ak, r[0], r[1]);
          Mma(st[2 * np + 1], ak, r[2], r[3]);
          LoadBFromNK(r, dos, ld, np * 16, kk * 16);
          Mma(dpt[2 * np], av, r[0], r[1]);
          Mma(dpt[2 * np + 1], av, r[2], r[3]);
        }
      }
      // P = exp(scale·s − lse) (0 above the diagonal when causal) and dS = P·(dP − Δ), in place.
#pragma unroll
      for (int nt = 0; nt < kBwdBlockQ / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = kt * kBlockKv + warp * 16 + g + (e >> 1) * 8;
          const int col = nt * 8 + 2 * t + (e & 1);
          const float pe = p.causal && key > qt * kBwdBlockQ + col
                               ? 0.0f
                               : exp2f(st[nt][e] * scale_log2 - lse_s[col]);
          st[nt][e] = pe;
          dpt[nt][e] = pe * (dpt[nt][e] - delta_s[col]);
        }
      }
      // dV += Pᵀ·d_out and dK += dSᵀ·Q (k = the 32 queries, two steps).
#pragma unroll
      for (int kk = 0; kk < kBwdBlockQ / 16; ++kk) {
        const uint32_t ap[4] = {
            Pack(st[2 * kk][0], st[2 * kk][1]), Pack(st[2 * kk][2], st[2 * kk][3]),
            Pack(st[2 * kk + 1][0], st[2 * kk + 1][1]), Pack(st[2 * kk + 1][2], st[2 * kk + 1][3])};
        const uint32_t ads[4] = {Pack(dpt[2 * kk][0], dpt[2 * kk][1]),
                                 Pack(dpt[2 * kk][2], dpt[2 * kk][3]),
                                 Pack(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                 Pack(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t r[4];
          LoadBFromKN(r, dos, ld, kk * 16, dp * 16);
          Mma(dv[2 * dp], ap, r[0], r[1]);
          Mma(dv[2 * dp + 1], ap, r[2], r[3]);
          LoadBFromKN(r, qs, ld, kk * 16, dp * 16);
          Mma(dk[2 * dp], ads, r[0], r[1]);
          Mma(dk[2 * dp + 1], ads, r[2], r[3]);
        }
      }
      // dS to shared memory as [query][key] for dQ = dS·K.
#pragma unroll
      for (int nt = 0; nt < kBwdBlockQ / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = warp * 16 + g + (e >> 1) * 8, col = nt * 8 + 2 * t + (e & 1);
          dss[col * ld_ds + key] = __float2bfloat16_rn(dpt[nt][e]);
        }
      }
      __syncthreads();
      // This warp's D/4 columns of dQ, 16 queries at a time, added to the f32 buffer.
#pragma unroll
      for (int mt = 0; mt < kBwdBlockQ / 16; ++mt) {
        float dq[kDqCols / 8][4];
#pragma unroll
        for (int nt = 0; nt < kDqCols / 8; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0;
#pragma unroll
        for (int kk = 0; kk < kBlockKv / 16; ++kk) {
          uint32_t a[4];
          LoadA(a, dss, ld_ds, mt * 16, kk * 16);
#pragma unroll
          for (int np = 0; np < kDqCols / 16; ++np) {
            uint32_t r[4];
            LoadBFromKN(r, ks, ld, kk * 16, warp * kDqCols + np * 16);
            Mma(dq[2 * np], a, r[0], r[1]);
            Mma(dq[2 * np + 1], a, r[2], r[3]);
          }
        }
#pragma unroll
        for (int nt = 0; nt < kDqCols / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int row = qt * kBwdBlockQ + mt * 16 + g + (e >> 1) * 8;
            const int col = warp * kDqCols + nt * 8 + 2 * t + (e & 1);
            atomicAdd(dq_accum + ((int64_t{b} * p.q_seq + row) * p.q_heads + h) * D + col,
                      dq[nt][e] * dq_scale);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = kt * kBlockKv + warp * 16 + g + r * 8;
    const int64_t off = ((int64_t{b} * p.kv_seq + key) * p.kv_heads + kvh) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const int col = dt * 8 + 2 * t;
      PutGradPair(d_k + off + col, dk[dt][2 * r] * p.scale, dk[dt][2 * r + 1] * p.scale);
      PutGradPair(d_v + off + col, dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
  }
}

__global__ void ScaleToBf16(const float* src, float scale, int64_t n, bf16* dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = __float2bfloat16_rn(src[i] * scale);
  }
}

FlashParams Params(const AttentionBlockDims& d, float scale) {
  FlashParams p;
  p.q_seq = static_cast<int>(d.q_seq);
  p.kv_seq = static_cast<int>(d.kv_seq);
  p.q_heads = static_cast<int>(d.q_heads);
  p.kv_heads = static_cast<int>(d.kv_heads);
  p.group = static_cast<int>(d.q_heads / d.kv_heads);
  p.causal = d.causal;
  p.scale = scale;
  return p;
}

template <int D, typename OutT>
void Forward(const AttentionBlockDims& d, const Tensor& q, const Tensor& k, const Tensor& v,
             float scale, Tensor* out, Tensor* lse, const Stream& stream) {
  constexpr int kBytes = ForwardSharedBytes<D>();
  MF_CUDA_CHECK(cudaFuncSetAttribute(FlashForwardKernel<D, OutT>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  const dim3 grid(static_cast<unsigned>(d.q_seq / kBlockQ), static_cast<unsigned>(d.q_heads),
                  static_cast<unsigned>(d.batch));
  FlashForwardKernel<D, OutT><<<grid, kThreads, kBytes, Native(stream)>>>(
      q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), Params(d, scale), out->data<OutT>(),
      lse->data<float>());
  MF_CUDA_CHECK_LAUNCH();
}

// `accumulate`: d_q, d_k, d_v are f32 and the block's gradients are added to them (dQ straight
// into d_q, scaled before the atomics); else bf16, overwritten (dQ through a zeroed f32 scratch,
// scaled and rounded at the end).
template <int D>
void Backward(const AttentionBlockDims& d, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& out, const Tensor& lse, const Tensor& d_out, float scale,
              bool accumulate, Tensor* d_q, Tensor* d_k, Tensor* d_v, const Stream& stream) {
  const FlashParams p = Params(d, scale);
  const cudaStream_t s = Native(stream);
  const int64_t rows = d.batch * d.q_heads * d.q_seq;
  Tensor delta = Scratch({rows}, DType::kF32, stream);
  DeltaKernel<D><<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, s>>>(
      out.data<bf16>(), d_out.data<bf16>(), p, rows, delta.data<float>());
  MF_CUDA_CHECK_LAUNCH();
  constexpr int kBytes = BackwardSharedBytes<D>();
  const dim3 grid(static_cast<unsigned>(d.kv_seq / kBlockKv), static_cast<unsigned>(d.kv_heads),
                  static_cast<unsigned>(d.batch));
  if (accumulate) {
    MF_CUDA_CHECK(cudaFuncSetAttribute(FlashBackwardKernel<D, float>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
    FlashBackwardKernel<D, float><<<grid, kThreads, kBytes, s>>>(
        q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), d_out.data<bf16>(), lse.data<float>(),
        delta.data<float>(), p, scale, d_q->data<float>(), d_k->data<float>(), d_v->data<float>());
    MF_CUDA_CHECK_LAUNCH();
    return;
  }
  Tensor dq_accum = Scratch(q.shape(), DType::kF32, stream);
  dq_accum.SetZero(stream);
  MF_CUDA_CHECK(cudaFuncSetAttribute(FlashBackwardKernel<D, bf16>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  FlashBackwardKernel<D, bf16><<<grid, kThreads, kBytes, s>>>(
      q.data<bf16>(), k.data<bf16>(), v.data<bf16>(), d_out.data<bf16>(), lse.data<float>(),
      delta.data<float>(), p, 1.0f, dq_accum.data<float>(), d_k->data<bf16>(), d_v->data<bf16>());
  MF_CUDA_CHECK_LAUNCH();
  const int64_t n = q.numel();
  ScaleToBf16<<<DeviceGrid(n, 256, 256, stream), 256, 0, s>>>(dq_accum.data<float>(), scale, n,
                                                              d_q->data<bf16>());
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool FlashAttentionSupports(const AttentionBlockDims& d, DType dtype) {
  const auto tiles = [](int64_t seq) {
    return seq > 0 && seq % kBlockKv == 0 && seq <= (int64_t{1} << 30);
  };
  return dtype == DType::kBF16 && (d.head_dim == 64 || d.head_dim == 128) && tiles(d.q_seq) &&
         tiles(d.kv_seq) && (!d.causal || d.q_seq == d.kv_seq) && d.q_heads <= 65535 &&
         d.batch <= 65535;
}

void FlashAttentionForward(const AttentionBlockDims& d, const Tensor& q, const Tensor& k,
                           const Tensor& v, float scale, Tensor* out, Tensor* lse,
                           const Stream& stream) {
  const bool f32_out = out->dtype() == DType::kF32;
  if (d.head_dim == 64) {
    return f32_out ? Forward<64, float>(d, q, k, v, scale, out, lse, stream)
                   : Forward<64, bf16>(d, q, k, v, scale, out, lse, stream);
  }
  return f32_out ? Forward<128, float>(d, q, k, v, scale, out, lse, stream)
                 : Forward<128, bf16>(d, q, k, v, scale, out, lse, stream);
}

void FlashAttentionBackward(const AttentionBlockDims& d, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Tensor& out, const Tensor& lse,
                            const Tensor& d_out, float scale, bool accumulate, Tensor* d_q,
                            Tensor* d_k, Tensor* d_v, const Stream& stream) {
  if (d.head_dim == 64) {
    return Backward<64>(d, q, k, v, out, lse, d_out, scale, accumulate, d_q, d_k, d_v, stream);
  }
  Backward<128>(d, q, k, v, out, lse, d_out, scale, accumulate, d_q, d_k, d_v, stream);
}

}  // namespace moefold::ops::cuda
