// CUDA SwiGLU on the fused (T, 2F) gate_up tensor: out = silu(g)·u forward; d_up = d·silu(g),
// d_gate = d·u·σ(g)·(1 + g·(1 − σ(g))). f32 math with expf (not __expf) so f32 parity holds;
// 16-byte packs when pointers and rows allow, single elements otherwise, with the same per-element
// arithmetic. d_gate_up may alias gate_up: every element is read before the same thread writes it.
#include <cstdint>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/swiglu_math.cuh"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> ForwardPack(const Pack<T, N>& gate, const Pack<T, N>& up) {
  Pack<T, N> out;
#pragma unroll
  for (int e = 0; e < N; ++e) {
    out.v[e] = FromF32<T>(SwiGluValue(ToF32(gate.v[e]), ToF32(up.v[e])));
  }
  return out;
}

template <typename T, int N>
__device__ __forceinline__ void BackwardPack(const Pack<T, N>& gate, const Pack<T, N>& up,
                                             const Pack<T, N>& d_out, Pack<T, N>* d_gate,
                                             Pack<T, N>* d_up) {
#pragma unroll
  for (int e = 0; e < N; ++e) {
    float dg, du;
    SwiGluGrads(ToF32(gate.v[e]), ToF32(up.v[e]), ToF32(d_out.v[e]), &dg, &du);
    d_up->v[e] = FromF32<T>(du);
    d_gate->v[e] = FromF32<T>(dg);
  }
}

template <typename T, int N>
struct GateUp {
  Pack<T, N> gate, up;
};
template <typename T, int N>
struct GateUpGrad {
  Pack<T, N> gate, up, d_out;
};

// The fused layout: pack i of out (T, F) is row t = i / (F/N), column pack c = i mod (F/N); its
// gate is at gate_up[t, c·N] and its up at gate_up[t, F + c·N]. Index is uint32_t when every pack
// index fits (a 32-bit division is several times cheaper than a 64-bit one), else uint64_t.
template <typename Index>
__device__ __forceinline__ int64_t GateOffset(int64_t i, Index row_packs, int64_t row_width,
                                              int n) {
  const Index t = static_cast<Index>(i) / row_packs;
  const Index c = static_cast<Index>(i) - t * row_packs;
  return static_cast<int64_t>(t) * (2 * row_width) + static_cast<int64_t>(c) * n;
}

template <typename T, int N, typename Index>
__global__ void SwiGluFusedForwardKernel(const T* gate_up, T* out, int64_t packs, int64_t f) {
  const Index row_packs = static_cast<Index>(f / N);
  ForEachPack(
      FirstThread(), packs, GridThreads(),
      [&](int64_t i) {
        const T* g = gate_up + GateOffset<Index>(i, row_packs, f, N);
        return GateUp<T, N>{LoadPack<N>(g), LoadPack<N>(g + f)};
      },
      [&](int64_t i, const GateUp<T, N>& in) {
        StorePack<N>(out + i * N, ForwardPack(in.gate, in.up));
      });
}

template <typename T, int N, typename Index>
__global__ void SwiGluFusedBackwardKernel(const T* gate_up, const T* d_out, T* d_gate_up,
                                          int64_t packs, int64_t f) {
  const Index row_packs = static_cast<Index>(f / N);
  ForEachPack<kPacksInFlightWide>(
      FirstThread(), packs, GridThreads(),
      [&](int64_t i) {
        const T* g = gate_up + GateOffset<Index>(i, row_packs, f, N);
        return GateUpGrad<T, N>{LoadPack<N>(g), LoadPack<N>(g + f), LoadPack<N>(d_out + i * N)};
      },
      [&](int64_t i, const GateUpGrad<T, N>& in) {
        Pack<T, N> dg, du;
        BackwardPack(in.gate, in.up, in.d_out, &dg, &du);
        T* d = d_gate_up + GateOffset<Index>(i, row_packs, f, N);
        StorePack<N>(d, dg);
        StorePack<N>(d + f, du);
      });
}

// gate_up (T, 2F) on the stream's GPU; returns F.
int64_t CheckGateUp(const Tensor& gate_up, const Stream& stream, const char* op) {
  CheckStream(stream, gate_up.device(), op);
  CheckActivation(gate_up, gate_up.device(), op, "gate_up");
  CheckRank(gate_up, 2, op, "gate_up");
  MF_CHECK(gate_up.dim(1) % 2 == 0)
      << op << ": gate_up must have an even number of columns (gate | up), got "
      << gate_up.DebugString();
  return gate_up.dim(1) / 2;
}

// Launches the fused kernel `launch(width, index)` with packs of 16 bytes when every pointer is
// aligned and F fills whole packs (so each row's gate and up halves start aligned), else single
// elements; index is a uint32_t or uint64_t tag.
template <typename T, typename Launch>
void LaunchFused(std::initializer_list<const void*> pointers, int64_t t, int64_t f,
                 const Launch& launch) {
  WithPackWidth<T>(pointers, f, [&](auto width) {
    constexpr int N = decltype(width)::value;
    const int64_t packs = t * f / N;
    if (packs <= int64_t{UINT32_MAX}) {
      launch(width, uint32_t{0}, packs);
    } else {
      launch(width, uint64_t{0}, packs);
    }
  });
}

}  // namespace

void SwiGluForward(const Tensor& gate_up, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "SwiGluForward";
  const int64_t f = CheckGateUp(gate_up, stream, kOp);
  const int64_t t = gate_up.dim(0);
  CheckOut(out, gate_up.device(), gate_up.dtype(), {t, f}, kOp, "out");
  if (t == 0 || f == 0) return;
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(gate_up.dtype(), kOp, T, {
    const T* pgu = gate_up.data<T>();
    T* po = out->data<T>();
    LaunchFused<T>({pgu, po}, t, f, [&](auto width, auto index, int64_t packs) {
      constexpr int N = decltype(width)::value;
      using Index = decltype(index);
      SwiGluFusedForwardKernel<T, N, Index>
          <<<PackGrid(packs, kThreads, stream), kThreads, 0, s>>>(pgu, po, packs, f);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

void SwiGluBackward(const Tensor& gate_up, const Tensor& d_out, Tensor* d_gate_up, Stream& stream) {
  constexpr const char* kOp = "SwiGluBackward";
  const int64_t f = CheckGateUp(gate_up, stream, kOp);
  const int64_t t = gate_up.dim(0);
  CheckIn(d_out, gate_up.device(), gate_up.dtype(), {t, f}, kOp, "d_out");
  CheckOut(d_gate_up, gate_up.device(), gate_up.dtype(), gate_up.shape(), kOp, "d_gate_up");
  if (t == 0 || f == 0) return;
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(gate_up.dtype(), kOp, T, {
    const T* pgu = gate_up.data<T>();
    const T* pd = d_out.data<T>();
    T* pdgu = d_gate_up->data<T>();
    LaunchFused<T>({pgu, pd, pdgu}, t, f, [&](auto width, auto index, int64_t packs) {
      constexpr int N = decltype(width)::value;
      using Index = decltype(index);
      SwiGluFusedBackwardKernel<T, N, Index>
          <<<PackGrid(packs, kThreads, stream), kThreads, 0, s>>>(pgu, pd, pdgu, packs, f);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace moefold::ops::cuda
