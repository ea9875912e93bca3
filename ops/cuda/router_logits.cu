// CUDA router logits and their backward: tiled f32 GEMMs on the CUDA cores that read the routed
// rows in their own dtype (bf16 or f32) with 16-byte loads, so no f32 copy of x is made. Each
// output is one thread's sequential f32 sum in k order (deterministic); a long sum (the weight
// gradient's over all T tokens, the logits' over H when there are few tokens) is cut into a fixed
// number of ranges whose partial sums one more kernel adds in range order (no atomics). Shapes
// decide everything, so results do not depend on the GPU.
//
// A block computes a 64 × (16·kTn) tile of C with 256 threads (16 × 16): thread (ty, tx) owns rows
// 4·ty .. 4·ty+3 and columns tx + 16·j. Each step stages 32 values of K of both operands in
// shared memory as [k][row] and [k][column] (transposing when the operand is stored the other way).
#include <algorithm>
#include <type_traits>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBm = 64;             // rows of C per block
constexpr int kBk = 32;             // K per shared-memory stage
constexpr int kLdA = kBm + 4;       // padded row of the A stage (float4-aligned)
constexpr int kTargetBlocks = 256;  // the weight gradient's token ranges aim for this many blocks

// The K values of a stage that remain before `end` (at most kBk).
__device__ __forceinline__ int StageDepth(int64_t k0, int64_t end) {
  return end - k0 < kBk ? static_cast<int>(end - k0) : kBk;
}

// Padded row of the B stage for 16·kTn columns (float4-aligned).
template <int kTn>
constexpr int kLdB = 16 * kTn + 4;

// tile[c][r] = src[(row0 + r)·cols + col0 + c] for r < tile_rows, c < kBk (0 outside the matrix).
// With kVec > 1, cols % kVec == 0 and src is 16-byte aligned: a vector never straddles the edge.
template <typename T, int kVec>
__device__ __forceinline__ void StageTransposed(const T* src, int64_t rows, int64_t cols,
                                                int64_t row0, int64_t col0, int tile_rows,
                                                float* tile, int ld) {
  if constexpr (kVec > 1) {
    const int vectors = tile_rows * (kBk / kVec);
    for (int q = threadIdx.x; q < vectors; q += blockDim.x) {
      // Consecutive threads take consecutive rows: the transposed stores hit distinct banks.
      const int r = q % tile_rows, c0 = (q / tile_rows) * kVec;
      float f[kVec];
      if (row0 + r < rows && col0 + c0 < cols) {
        PackToF32(LoadPack<kVec>(src + (row0 + r) * cols + col0 + c0), f);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) f[i] = 0.0f;
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) tile[(c0 + i) * ld + r] = f[i];
    }
  } else {
    for (int q = threadIdx.x; q < tile_rows * kBk; q += blockDim.x) {
      const int r = q / kBk, c = q % kBk;  // coalesced along the source row
      const bool in = row0 + r < rows && col0 + c < cols;
      tile[c * ld + r] = in ? ToF32(src[(row0 + r) * cols + col0 + c]) : 0.0f;
    }
  }
}

// tile[r][c] = src[(row0 + r)·cols + col0 + c] for r < kBk, c < tile_cols (0 outside the matrix).
// Same vector rule as StageTransposed; tile_cols is a multiple of 16.
template <typename T, int kVec>
__device__ __forceinline__ void StageNatural(const T* src, int64_t rows, int64_t cols, int64_t row0,
                                             int64_t col0, int tile_cols, float* tile, int ld) {
  const int per_row = tile_cols / kVec;
  for (int q = threadIdx.x; q < kBk * per_row; q += blockDim.x) {
    const int r = q / per_row, c0 = (q % per_row) * kVec;
    float f[kVec];
    if (row0 + r < rows && col0 + c0 < cols) {
      PackToF32(LoadPack<kVec>(src + (row0 + r) * cols + col0 + c0), f);
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) f[i] = 0.0f;
    }
    if constexpr (kVec % 4 == 0) {
#pragma unroll
      for (int i = 0; i < kVec; i += 4) {
        *reinterpret_cast<float4*>(tile + r * ld + c0 + i) =
            make_float4(f[i], f[i + 1], f[i + 2], f[i + 3]);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kVec; ++i) tile[r * ld + c0 + i] = f[i];
    }
  }
}

// acc[i][j] += Σ_{k < kmax} a[k][4·ty + i] · b[k][tx + 16·j], k in increasing order.
template <int kTn>
__device__ __forceinline__ void MultiplyStage(const float* a, const float* b, int kmax,
                                              float (&acc)[4][kTn]) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll 4
  for (int k = 0; k < kmax; ++k) {
    const float4 av = *reinterpret_cast<const float4*>(a + k * kLdA + 4 * ty);
    const float ar[4] = {av.x, av.y, av.z, av.w};
#pragma unroll
    for (int j = 0; j < kTn; ++j) {
      const float bv = b[k * kLdB<kTn> + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i][j] = fmaf(ar[i], bv, acc[i][j]);
    }
  }
}

// Calls store(m, n, value) for each output of this thread's tile (rows m0 + 4·ty + i, columns
// n0 + tx + 16·j) that lies inside rows × cols.
template <int kTn, typename Store>
__device__ __forceinline__ void ForEachOutput(int64_t m0, int64_t n0, int64_t rows, int64_t cols,
                                              const float (&acc)[4][kTn], Store store) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + 4 * ty + i;
#pragma unroll
    for (int j = 0; j < kTn; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (m < rows && n < cols) store(m, n, acc[i][j]);
    }
  }
}

// The partial logits over hidden range z = blockIdx.z: out[z][t][e] = Σ_{h in range z} x[t][h] ·
// w[e][h] (with one range, out is the logits themselves). Grid (T/64, E/(16·kTn), ranges).
template <typename T, bool kVec, int kTn>
__global__ void __launch_bounds__(kThreads)
    LogitsKernel(const T* x, const float* w, int64_t tokens, int64_t hidden, int64_t experts,
                 int64_t range, float* out) {
  __shared__ __align__(16) float a[kBk * kLdA];
  __shared__ __align__(16) float b[kBk * kLdB<kTn>];
  const int64_t m0 = int64_t{blockIdx.x} * kBm, n0 = int64_t{blockIdx.y} * 16 * kTn;
  const int64_t begin = int64_t{blockIdx.z} * range;
  const int64_t end = begin + range < hidden ? begin + range : hidden;
  float acc[4][kTn] = {};
  for (int64_t k0 = begin; k0 < end; k0 += kBk) {
    StageTransposed<T, kVec ? kVecWidth<T> : 1>(x, tokens, hidden, m0, k0, kBm, a, kLdA);
    StageTransposed<float, kVec ? kVecWidth<float> : 1>(w, experts, hidden, n0, k0, 16 * kTn, b,
                                                        kLdB<kTn>);
    __syncthreads();
    MultiplyStage<kTn>(a, b, StageDepth(k0, end), acc);
    __syncthreads();
  }
  out += int64_t{blockIdx.z} * tokens * experts;
  ForEachOutput<kTn>(m0, n0, tokens, experts, acc,
                     [&](int64_t m, int64_t n, float value) { out[m * experts + n] = value; });
}

// logits[i] = Σ_z partial[z][i], z in increasing order.
__global__ void SumPartialsKernel(const float* partial, int64_t ranges, int64_t n, float* logits) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    float sum = 0.0f;
    for (int64_t z = 0; z < ranges; ++z) sum += partial[z * n + i];
    logits[i] = sum;
  }
}

// d_x (T, H) += d_logits (T, E) · w (E, H), rounded once into d_x's dtype. Grid (T/64, H/64).
template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    InputGradKernel(const float* d_logits, const float* w, int64_t tokens, int64_t hidden,
                    int64_t experts, T* d_x) {
  constexpr int kTn = 4;
  __shared__ __align__(16) float a[kBk * kLdA];
  __shared__ __align__(16) float b[kBk * kLdB<kTn>];
  const int64_t m0 = int64_t{blockIdx.x} * kBm, n0 = int64_t{blockIdx.y} * 16 * kTn;
  float acc[4][kTn] = {};
  for (int64_t k0 = 0; k0 < experts; k0 += kBk) {
    StageTransposed<float, kVec ? kVecWidth<float> : 1>(d_logits, tokens, experts, m0, k0, kBm, a,
                                                        kLdA);
    StageNatural<float, kVec ? kVecWidth<float> : 1>(w, experts, hidden, k0, n0, 16 * kTn, b,
                                                     kLdB<kTn>);
    __syncthreads();
    MultiplyStage<kTn>(a, b, StageDepth(k0, experts), acc);
    __syncthreads();
  }
  ForEachOutput<kTn>(m0, n0, tokens, hidden, acc, [&](int64_t m, int64_t n, float value) {
    T* out = d_x + m * hidden + n;
    *out = FromF32<T>(ToF32(*out) + value);
  });
}

// The weight gradient's partial sums over token range z = blockIdx.z: partial[z][h][e] =
// Σ_{t in range z} x[t][h] · d_logits[t][e], i.e. C = xᵀ · d_logits with rows h and columns e.
// Grid (H/64, E/(16·kTn), ranges).
template <typename T, bool kVec, int kTn>
__global__ void __launch_bounds__(kThreads)
    WeightGradPartialKernel(const T* x, const float* d_logits, int64_t tokens, int64_t hidden,
                            int64_t experts, int64_t range, float* partial) {
  __shared__ __align__(16) float a[kBk * kLdA];
  __shared__ __align__(16) float b[kBk * kLdB<kTn>];
  const int64_t m0 = int64_t{blockIdx.x} * kBm, n0 = int64_t{blockIdx.y} * 16 * kTn;
  const int64_t begin = int64_t{blockIdx.z} * range,
                end = begin + range < tokens ? begin + range : tokens;
  float acc[4][kTn] = {};
  for (int64_t k0 = begin; k0 < end; k0 += kBk) {
    StageNatural<T, kVec ? kVecWidth<T> : 1>(x, end, hidden, k0, m0, kBm, a, kLdA);
    StageNatural<float, kVec ? kVecWidth<float> : 1>(d_logits, end, experts, k0, n0, 16 * kTn, b,
                                                     kLdB<kTn>);
    __syncthreads();
    MultiplyStage<kTn>(a, b, StageDepth(k0, end), acc);
    __syncthreads();
  }
  float* out = partial + int64_t{blockIdx.z} * hidden * experts;
  ForEachOutput<kTn>(m0, n0, hidden, experts, acc,
                     [&](int64_t m, int64_t n, float value) { out[m * experts + n] = value; });
}

// d_w[e][h] += Σ_z partial[z][h][e], z in increasing order (reads coalesced along e).
__global__ void AddPartialsKernel(const float* partial, int64_t ranges, int64_t hidden,
                                  int64_t experts, float* d_w) {
  const int64_t n = hidden * experts;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    float sum = 0.0f;
    for (int64_t z = 0; z < ranges; ++z) sum += partial[z * n + i];
    const int64_t h = i / experts, e = i - h * experts;
    d_w[e * hidden + h] += sum;
  }
}

// Columns per thread for E outputs per row: the smallest of 1, 2, 4, 8 with 16·kTn ≥ E (8 above).
int ColumnsPerThread(int64_t experts) {
  return experts <= 16 ? 1 : experts <= 32 ? 2 : experts <= 64 ? 4 : 8;
}

// Calls launch(std::integral_constant<int, kTn>) for the runtime kTn.
template <typename Launch>
void WithColumns(int tn, Launch launch) {
  switch (tn) {
    case 1:
      launch(std::integral_constant<int, 1>());
      break;
    case 2:
      launch(std::integral_constant<int, 2>());
      break;
    case 4:
      launch(std::integral_constant<int, 4>());
      break;
    default:
      launch(std::integral_constant<int, 8>());
      break;
  }
}

unsigned Tiles(int64_t n, int64_t tile) { return static_cast<unsigned>((n + tile - 1) / tile); }

// How a sum over k terms is cut when `tiles` blocks alone would leave the GPU idle: `ranges`
// consecutive ranges of `range` terms (a whole number of stages), enough for about kTargetBlocks
// blocks. A function of the shapes only, so the summation order is the same on every GPU.
struct KSplit {
  int64_t range, ranges;
};
KSplit SplitK(int64_t k, int64_t tiles) {
  const int64_t stages = (k + kBk - 1) / kBk;
  const int64_t wanted = std::clamp<int64_t>((kTargetBlocks + tiles - 1) / tiles, 1, stages);
  const int64_t range = (stages + wanted - 1) / wanted * kBk;
  return KSplit{range, (k + range - 1) / range};
}

// x (T, H) f32 or bf16 and w (E, H) f32 on the stream's GPU.
void CheckInputs(const Tensor& x, const Tensor& w, const Stream& stream, const char* op) {
  const Device dev = x.device();
  CheckStream(stream, dev, op);
  CheckActivation(x, dev, op, "x");
  CheckRank(x, 2, op, "x");
  CheckOn(w, dev, op, "w");
  CheckDType(w, DType::kF32, op, "w");
  CheckRank(w, 2, op, "w");
  MF_CHECK_EQ(w.dim(1), x.dim(1)) << op << ": w " << w.DebugString() << " vs x " << x.DebugString();
  MF_CHECK_LE(w.dim(0), 65535 * 16) << op << ": too many experts in " << w.DebugString();
}

}  // namespace

void RouterLogitsForward(const Tensor& x, const Tensor& w, Tensor* logits, Stream& stream) {
  constexpr const char* kOp = "RouterLogitsForward";
  CheckInputs(x, w, stream, kOp);
  const int64_t tokens = x.dim(0), hidden = x.dim(1), experts = w.dim(0);
  CheckOut(logits, x.device(), DType::kF32, {tokens, experts}, kOp, "logits");
  if (tokens == 0 || experts == 0) return;
  const int tn = ColumnsPerThread(experts);
  // Few tokens give few tiles: the hidden dimension is then split too (summed in order after).
  const KSplit split =
      SplitK(std::max<int64_t>(hidden, 1), int64_t{Tiles(tokens, kBm)} * Tiles(experts, 16 * tn));
  Tensor partial;
  if (split.ranges > 1) partial = Scratch({split.ranges * tokens * experts}, DType::kF32, stream);
  float* out = split.ranges > 1 ? partial.data<float>() : logits->data<float>();
  MF_DISPATCH_FLOAT(x.dtype(), kOp, T, {
    const bool vec = VectorAligned<T>({x.raw_data(), w.raw_data()}, hidden);
    WithColumns(tn, [&](auto columns) {
      constexpr int kTn = decltype(columns)::value;
      const dim3 grid(Tiles(tokens, kBm), Tiles(experts, 16 * kTn),
                      static_cast<unsigned>(split.ranges));
      if (vec) {
        LogitsKernel<T, true, kTn><<<grid, kThreads, 0, Native(stream)>>>(
            x.data<T>(), w.data<float>(), tokens, hidden, experts, split.range, out);
      } else {
        LogitsKernel<T, false, kTn><<<grid, kThreads, 0, Native(stream)>>>(
            x.data<T>(), w.data<float>(), tokens, hidden, experts, split.range, out);
      }
    });
  });
  MF_CUDA_CHECK_LAUNCH();
  if (split.ranges > 1) {
    SumPartialsKernel<<<DeviceGrid(tokens * experts, kThreads, kThreads, stream), kThreads, 0,
                        Native(stream)>>>(out, split.ranges, tokens * experts,
                                          logits->data<float>());
    MF_CUDA_CHECK_LAUNCH();
  }
}

void RouterLogitsBackward(const Tensor& x, const Tensor& w, const Tensor& d_logits, Tensor* d_x,
                          Tensor* d_w, Stream& stream) {
  constexpr const char* kOp = "RouterLogitsBackward";
  CheckInputs(x, w, stream, kOp);
  const Device dev = x.device();
  const int64_t tokens = x.dim(0), hidden = x.dim(1), experts = w.dim(0);
  CheckIn(d_logits, dev, DType::kF32, {tokens, experts}, kOp, "d_logits");
  if (d_x != nullptr) CheckOut(d_x, dev, x.dtype(), x.shape(), kOp, "d_x");
  if (d_w != nullptr) CheckOut(d_w, dev, DType::kF32, w.shape(), kOp, "d_w");
  if (tokens == 0 || hidden == 0 || experts == 0) return;

  if (d_x != nullptr) {
    MF_CHECK_LE(hidden, int64_t{65535} * 64) << kOp << ": hidden size " << hidden;
    const bool vec = VectorAligned<float>({d_logits.raw_data()}, experts) &&
                     VectorAligned<float>({w.raw_data()}, hidden);
    const dim3 grid(Tiles(tokens, kBm), Tiles(hidden, 64));
    MF_DISPATCH_FLOAT(x.dtype(), kOp, T, {
      if (vec) {
        InputGradKernel<T, true><<<grid, kThreads, 0, Native(stream)>>>(
            d_logits.data<float>(), w.data<float>(), tokens, hidden, experts, d_x->data<T>());
      } else {
        InputGradKernel<T, false><<<grid, kThreads, 0, Native(stream)>>>(
            d_logits.data<float>(), w.data<float>(), tokens, hidden, experts, d_x->data<T>());
      }
    });
    MF_CUDA_CHECK_LAUNCH();
  }

  if (d_w != nullptr) {
    const int tn = ColumnsPerThread(experts);
    const KSplit split = SplitK(tokens, int64_t{Tiles(hidden, kBm)} * Tiles(experts, 16 * tn));
    const int64_t range = split.range, ranges = split.ranges;
    Tensor partial = Scratch({ranges * hidden * experts}, DType::kF32, stream);
    MF_DISPATCH_FLOAT(x.dtype(), kOp, T, {
      const bool vec = VectorAligned<T>({x.raw_data()}, hidden) &&
                       VectorAligned<float>({d_logits.raw_data()}, experts);
      WithColumns(tn, [&](auto columns) {
        constexpr int kTn = decltype(columns)::value;
        const dim3 grid(Tiles(hidden, kBm), Tiles(experts, 16 * kTn),
                        static_cast<unsigned>(ranges));
        if (vec) {
          WeightGradPartialKernel<T, true, kTn><<<grid, kThreads, 0, Native(stream)>>>(
              x.data<T>(), d_logits.data<float>(), tokens, hidden, experts, range,
              partial.data<float>());
        } else {
          WeightGradPartialKernel<T, false, kTn><<<grid, kThreads, 0, Native(stream)>>>(
              x.data<T>(), d_logits.data<float>(), tokens, hidden, experts, range,
              partial.data<float>());
        }
      });
    });
    MF_CUDA_CHECK_LAUNCH();
    AddPartialsKernel<<<DeviceGrid(hidden * experts, kThreads, kThreads, stream), kThreads, 0,
                        Native(stream)>>>(partial.data<float>(), ranges, hidden, experts,
                                          d_w->data<float>());
    MF_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace moefold::ops::cuda
