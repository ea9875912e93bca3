// CUDA fused FP8 producers (ops/fp8_fused.h): one warp per row. The warp computes the row's values
// with the unfused kernels' own arithmetic (rms_norm_row.cuh, swiglu_math.cuh), rounds each to the
// activation dtype (stored when the caller wants it), and quantises that value at once with
// fp8_cast.cuh's cast, so nothing re-reads a bf16 tensor. Lane l holds columns 4l … 4l+3 of each
// 128-column stretch, so a 1×128 tile is one warp-wide step: its amax is a warp shuffle, its scale
// lane-uniform. The per-tensor amax is one atomicMax of the warp's max bits per warp; bit maxima
// make that order-free. The transposed codes are written by column (strided, uncoalesced: the
// price of no second pass); warps of rows [M, M_pad) write the zero padding columns.
#include <cstdint>

#include "ops/cuda/common.cuh"
#include "ops/cuda/fp8_cast.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/rms_norm_row.cuh"
#include "ops/cuda/swiglu_math.cuh"
#include "ops/cuda/vector.cuh"
#include "ops/fp8.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kRowWarps = 8;
constexpr int kRowThreads = 32 * kRowWarps;
constexpr int kTileCols = 128;
constexpr int kLaneCols = kTileCols / 32;

struct QuantArgs {
  const float* scale;  // null: 1×128 tiles
  uint8_t* codes;
  uint8_t* codes_t;  // may be null
  int64_t m_pad;     // codes_t's columns
  uint32_t* amax;    // may be null
  float* scale_inv;  // tiles
  float fp8_max;
  bool pow2;
  __nv_fp8_interpretation_t format;
};

QuantArgs MakeArgs(const Fp8Quantize& q, int64_t m) {
  QuantArgs a{};
  a.scale = q.scale != nullptr ? q.scale->data<float>() : nullptr;
  a.codes = q.codes->data<uint8_t>();
  a.codes_t = q.codes_t != nullptr ? q.codes_t->data<uint8_t>() : nullptr;
  a.m_pad = q.codes_t != nullptr ? q.codes_t->dim(1) : m;
  a.amax = q.amax != nullptr ? static_cast<uint32_t*>(q.amax->raw_data()) : nullptr;
  a.scale_inv = q.scale_inv != nullptr ? q.scale_inv->data<float>() : nullptr;
  a.fp8_max = Fp8Max(q.codes->dtype());
  a.pow2 = q.pow2;
  a.format = Fp8Format(q.codes->dtype());
  return a;
}

__device__ __forceinline__ int Lane() { return threadIdx.x % 32; }
__device__ __forceinline__ int64_t FirstRow() {
  return blockIdx.x * int64_t{kRowWarps} + threadIdx.x / 32;
}
__device__ __forceinline__ int64_t RowStride() { return int64_t{gridDim.x} * kRowWarps; }

// The warp quantises row `row` of the (M, N) output; value(j) returns column j's value, already
// rounded to the activation dtype. Per tensor, *bits accumulates the lane's max |v| bits. Every
// lane of the warp calls this with the same row (the tile path shuffles).
template <typename Value>
__device__ __forceinline__ void QuantizeRow(int64_t row, int64_t n, const QuantArgs& a,
                                            const Value& value, uint32_t* bits) {
  const int64_t lane_col = int64_t{Lane()} * kLaneCols;
  if (a.scale != nullptr) {
    const float s = *a.scale;
    for (int64_t j0 = 0; j0 < n; j0 += kTileCols) {
#pragma unroll
      for (int k = 0; k < kLaneCols; ++k) {
        const int64_t j = j0 + lane_col + k;
        if (j >= n) break;
        const float v = value(j);
        *bits = max(*bits, AbsBits(v));
        const uint8_t code = CastFp8(__fmul_rn(v, s), a.format);
        a.codes[row * n + j] = code;
        if (a.codes_t != nullptr) a.codes_t[j * a.m_pad + row] = code;
      }
    }
    return;
  }
  const int64_t tiles = n / kTileCols;  // n % 128 == 0 (checked by the public op)
  for (int64_t t = 0; t < tiles; ++t) {
    float v[kLaneCols];
    uint32_t tile_bits = 0;
#pragma unroll
    for (int k = 0; k < kLaneCols; ++k) {
      v[k] = value(t * kTileCols + lane_col + k);
      tile_bits = max(tile_bits, AbsBits(v[k]));
    }
    tile_bits = WarpMaxBits(tile_bits);
    const float s = ScaleFromAmax(__uint_as_float(tile_bits), a.fp8_max, a.pow2, 1.0f);
    if (Lane() == 0) a.scale_inv[row * tiles + t] = __fdiv_rn(1.0f, s);
    uint8_t* codes = a.codes + row * n + t * kTileCols + lane_col;
#pragma unroll
    for (int k = 0; k < kLaneCols; ++k) codes[k] = CastFp8(__fmul_rn(v[k], s), a.format);
  }
}

// Rows [M, M_pad) of the transposed codes' padding: code 0 (+0) in every column.
__device__ __forceinline__ void ZeroPaddingRow(int64_t row, int64_t n, const QuantArgs& a) {
  for (int64_t j = Lane(); j < n; j += 32) a.codes_t[j * a.m_pad + row] = 0;
}

__device__ __forceinline__ void FlushAmax(uint32_t bits, const QuantArgs& a) {
  if (a.amax == nullptr) return;
  bits = WarpMaxBits(bits);
  if (Lane() == 0 && bits != 0) atomicMax(a.amax, bits);
}

// y = s·rstd·w as RmsNormForwardKernel rounds it (the same lane sums for pack width N), with s = x,
// or with a residual s = x + residual rounded to T and stored in `sum`.
template <typename T, int N>
__global__ void RmsNormFp8Kernel(const T* __restrict__ x, const T* __restrict__ residual,
                                 const T* __restrict__ w, float eps, int64_t rows, int64_t hidden,
                                 T* __restrict__ sum, T* __restrict__ y, float* __restrict__ rstd,
                                 QuantArgs a) {
  const int64_t padded = a.codes_t != nullptr ? a.m_pad : rows;
  uint32_t bits = 0;
  for (int64_t row = FirstRow(); row < padded; row += RowStride()) {
    if (row >= rows) {
      ZeroPaddingRow(row, hidden, a);
      continue;
    }
    const T* xr = x;
    float sq;
    if (residual == nullptr) {
      xr = x + row * hidden;
      sq = LaneSumSquares<T, N>(xr, hidden / N);
    } else {
      xr = sum + row * hidden;
      sq = LaneAddSumSquares<T, N>(x + row * hidden, residual + row * hidden, sum + row * hidden,
                                   hidden / N);
      // The quantising pass reads columns of `sum` other lanes wrote: order the warp's writes.
      __syncwarp();
    }
    const float r = RstdFromLaneSums(sq, hidden, eps);
    if (Lane() == 0) rstd[row] = r;
    T* yr = y != nullptr ? y + row * hidden : nullptr;
    QuantizeRow(
        row, hidden, a,
        [&](int64_t j) {
          const T v = FromF32<T>(ToF32(xr[j]) * r * ToF32(w[j]));
          if (yr != nullptr) yr[j] = v;
          return ToF32(v);
        },
        &bits);
  }
  FlushAmax(bits, a);
}

template <typename T>
__global__ void SwiGluFp8Kernel(const T* __restrict__ gate_up, int64_t rows, int64_t f,
                                T* __restrict__ act, QuantArgs a) {
  const int64_t padded = a.codes_t != nullptr ? a.m_pad : rows;
  uint32_t bits = 0;
  for (int64_t row = FirstRow(); row < padded; row += RowStride()) {
    if (row >= rows) {
      ZeroPaddingRow(row, f, a);
      continue;
    }
    const T* g = gate_up + row * 2 * f;
    T* out = act != nullptr ? act + row * f : nullptr;
    QuantizeRow(
        row, f, a,
        [&](int64_t j) {
          const T v = FromF32<T>(SwiGluValue(ToF32(g[j]), ToF32(g[f + j])));
          if (out != nullptr) out[j] = v;
          return ToF32(v);
        },
        &bits);
  }
  FlushAmax(bits, a);
}

// The quantised row is d_gate_up's (2F): d_gate in columns [0, F), d_up in [F, 2F).
template <typename T>
__global__ void SwiGluBackwardFp8Kernel(const T* __restrict__ gate_up, const T* __restrict__ d_act,
                                        int64_t rows, int64_t f, T* __restrict__ d_gate_up,
                                        QuantArgs a) {
  const int64_t padded = a.codes_t != nullptr ? a.m_pad : rows;
  uint32_t bits = 0;
  for (int64_t row = FirstRow(); row < padded; row += RowStride()) {
    if (row >= rows) {
      ZeroPaddingRow(row, 2 * f, a);
      continue;
    }
    const T* g = gate_up + row * 2 * f;
    const T* d = d_act + row * f;
    T* out = d_gate_up != nullptr ? d_gate_up + row * 2 * f : nullptr;
    QuantizeRow(
        row, 2 * f, a,
        [&](int64_t j) {
          const int64_t i = j < f ? j : j - f;
          float dg, du;
          SwiGluGrads(ToF32(g[i]), ToF32(g[f + i]), ToF32(d[i]), &dg, &du);
          const T v = FromF32<T>(j < f ? dg : du);
          if (out != nullptr) out[j] = v;
          return ToF32(v);
        },
        &bits);
  }
  FlushAmax(bits, a);
}

// The rows a launch walks: the output's, or the transposed codes' padded columns.
int64_t WalkedRows(const Fp8Quantize& q, int64_t m) {
  return q.codes_t != nullptr ? q.codes_t->dim(1) : m;
}

}  // namespace

namespace {

// RmsNormFp8 and AddRmsNormFp8 (residual and sum null for the plain norm).
void LaunchNormFp8(const Tensor& x, const Tensor* residual, const Tensor& w, float eps,
                   const Fp8Quantize& q, Tensor* sum, Tensor* y, Tensor* rstd, Stream& stream,
                   const char* op) {
  const Device dev = x.device();
  CheckStream(stream, dev, op);
  CheckActivation(x, dev, op, "x");
  const int64_t rows = x.dim(0), hidden = x.dim(1);
  CheckIn(w, dev, x.dtype(), {hidden}, op, "w");
  CheckOut(rstd, dev, DType::kF32, {rows}, op, "rstd");
  if (residual != nullptr) {
    CheckIn(*residual, dev, x.dtype(), x.shape(), op, "residual");
    CheckOut(sum, dev, x.dtype(), x.shape(), op, "sum");
  }
  const int64_t walked = WalkedRows(q, rows);
  if (walked == 0 || hidden == 0) return;
  const QuantArgs args = MakeArgs(q, rows);
  const int grid = DeviceGrid(walked, kRowWarps, kRowThreads, stream);
  const cudaStream_t s = Native(stream);
  MF_DISPATCH_FLOAT(x.dtype(), op, T, {
    const T* px = x.data<T>();
    const T* pr = residual != nullptr ? residual->data<T>() : nullptr;
    T* ps = sum != nullptr ? sum->data<T>() : nullptr;
    const T* pw = w.data<T>();
    T* py = y != nullptr ? y->data<T>() : nullptr;
    // RmsNormForward's choice of pack width (the same pointers, null ones skipped), so the lane
    // sums of squares — and rstd — are the same bits.
    WithPackWidth<T>({px, pr, ps, pw, py}, hidden, [&](auto width) {
      RmsNormFp8Kernel<T, decltype(width)::value><<<grid, kRowThreads, 0, s>>>(
          px, pr, pw, eps, rows, hidden, ps, py, rstd->data<float>(), args);
      MF_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

absl::Status RmsNormFp8(const Tensor& x, const Tensor& w, float eps, const Fp8Quantize& q,
                        Tensor* y, Tensor* rstd, Stream& stream) {
  LaunchNormFp8(x, nullptr, w, eps, q, nullptr, y, rstd, stream, "RmsNormFp8");
  return absl::OkStatus();
}

absl::Status AddRmsNormFp8(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                           const Fp8Quantize& q, Tensor* sum, Tensor* y, Tensor* rstd,
                           Stream& stream) {
  LaunchNormFp8(x, &residual, w, eps, q, sum, y, rstd, stream, "AddRmsNormFp8");
  return absl::OkStatus();
}

absl::Status SwiGluFp8(const Tensor& gate_up, const Fp8Quantize& q, Tensor* act, Stream& stream) {
  constexpr const char* kOp = "SwiGluFp8";
  const Device dev = gate_up.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(gate_up, dev, kOp, "gate_up");
  const int64_t rows = gate_up.dim(0), f = gate_up.dim(1) / 2;
  const int64_t walked = WalkedRows(q, rows);
  if (walked == 0 || f == 0) return absl::OkStatus();
  const QuantArgs args = MakeArgs(q, rows);
  const int grid = DeviceGrid(walked, kRowWarps, kRowThreads, stream);
  MF_DISPATCH_FLOAT(gate_up.dtype(), kOp, T,
                    SwiGluFp8Kernel<T><<<grid, kRowThreads, 0, Native(stream)>>>(
                        gate_up.data<T>(), rows, f, act != nullptr ? act->data<T>() : nullptr,
                        args));
  MF_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status SwiGluBackwardFp8(const Tensor& gate_up, const Tensor& d_act, const Fp8Quantize& q,
                               Tensor* d_gate_up, Stream& stream) {
  constexpr const char* kOp = "SwiGluBackwardFp8";
  const Device dev = gate_up.device();
  CheckStream(stream, dev, kOp);
  CheckActivation(gate_up, dev, kOp, "gate_up");
  MF_CHECK(gate_up.dim(1) % 2 == 0)
      << kOp << ": gate_up must have an even number of columns (gate | up), got "
      << gate_up.DebugString();
  const int64_t rows = gate_up.dim(0), f = gate_up.dim(1) / 2;
  CheckIn(d_act, dev, gate_up.dtype(), {rows, f}, kOp, "d_act");
  const int64_t walked = WalkedRows(q, rows);
  if (walked == 0 || f == 0) return absl::OkStatus();
  const QuantArgs args = MakeArgs(q, rows);
  const int grid = DeviceGrid(walked, kRowWarps, kRowThreads, stream);
  MF_DISPATCH_FLOAT(gate_up.dtype(), kOp, T,
                    SwiGluBackwardFp8Kernel<T><<<grid, kRowThreads, 0, Native(stream)>>>(
                        gate_up.data<T>(), d_act.data<T>(), rows, f,
                        d_gate_up != nullptr ? d_gate_up->data<T>() : nullptr, args));
  MF_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace moefold::ops::cuda
