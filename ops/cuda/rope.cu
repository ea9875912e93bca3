// CUDA rotary position embedding (Hugging Face rotate_half layout), alone and in the fused QKV
// split: one thread per 16-byte chunk of a head's first half and the matching chunk of its second
// half, factors read from the f32 table (L1/L2-resident: a token's row is shared by all its heads),
// f32 math without contraction (the CPU's bits). Each thread reads its elements before writing
// them, so y may alias x. A position outside the table traps the kernel (no host wait).
#include <cstdio>
#include <utility>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

// The table row of token t's position; traps (after printing it) when outside [0, rows).
__device__ __forceinline__ int64_t TablePosition(const int32_t* positions, int64_t t,
                                                 int64_t rows) {
  const int32_t pos = positions[t];
  if (pos < 0 || pos >= rows) {
    printf("moefold RoPE: position %d (token %lld) outside the table's [0, P=%lld)\n", pos,
           static_cast<long long>(t), static_cast<long long>(rows));
    __trap();
  }
  return pos;
}

// Rotates kVec pairs (x1[j], x2[j]) by the factors cs[2j] = cos, cs[2j + 1] = sin (sin negated
// for sign −1), operation by operation as the CPU's RotateRow (round-to-nearest intrinsics: no
// FMA contraction), so the kernels give the CPU's bits. cs is 16-byte aligned for kVec > 1.
template <int kVec>
__device__ __forceinline__ void RotatePairs(const float* cs, float sign, float (&x1)[kVec],
                                            float (&x2)[kVec]) {
  float f[2 * kVec];
  if constexpr (kVec == 1) {
    f[0] = cs[0];
    f[1] = cs[1];
  } else {
#pragma unroll
    for (int q = 0; q < kVec / 2; ++q) {
      const float4 two = reinterpret_cast<const float4*>(cs)[q];
      f[4 * q] = two.x;
      f[4 * q + 1] = two.y;
      f[4 * q + 2] = two.z;
      f[4 * q + 3] = two.w;
    }
  }
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const float c = f[2 * j], s = sign * f[2 * j + 1];
    const float a = x1[j], b = x2[j];
    x1[j] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    x2[j] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

// x (T, N, D): item = (token, head, chunk of kVec pairs).
template <typename T, int kVec>
__global__ void RopeTableKernel(const T* in, const int32_t* positions, const float* table,
                                int64_t table_rows, float sign, int64_t tokens, int heads, int half,
                                T* out) {
  const int chunks = half / kVec;
  const int64_t per_token = int64_t{heads} * chunks;
  const int64_t items = tokens * per_token;
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < items;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = p / per_token;
    const int rem = static_cast<int>(p - t * per_token);
    const int n = rem / chunks, i0 = (rem - n * chunks) * kVec;
    const int64_t pos = TablePosition(positions, t, table_rows);
    const int64_t base = (t * heads + n) * 2 * half;
    float x1[kVec], x2[kVec];
    PackToF32(LoadPack<kVec>(in + base + i0), x1);
    PackToF32(LoadPack<kVec>(in + base + half + i0), x2);
    RotatePairs<kVec>(table + (pos * half + i0) * 2, sign, x1, x2);
    StorePack<kVec>(out + base + i0, PackFromF32<T>(x1));
    StorePack<kVec>(out + base + half + i0, PackFromF32<T>(x2));
  }
}

// The fused (T, G·(r+2), D) rows against q (T, G·r, D), k and v (T, G, D): item = (token, fused
// head, chunk of kVec pairs). Forward reads `fused` and writes q, k, v; backward the reverse (the
// pointers are not const for that reason; each kernel writes only its outputs).
template <typename T, int kVec, bool kForward>
__global__ void QkvRopeKernel(T* fused, T* q, T* k, T* v, const int32_t* positions,
                              const float* table, int64_t table_rows, int64_t tokens, int groups,
                              int r, int half) {
  const int chunks = half / kVec;
  const int heads = groups * (r + 2), dim = 2 * half;
  const int64_t per_token = int64_t{heads} * chunks;
  const int64_t items = tokens * per_token;
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < items;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = p / per_token;
    const int rem = static_cast<int>(p - t * per_token);
    const int h = rem / chunks, i0 = (rem - h * chunks) * kVec;
    const int g = h / (r + 2), j = h - g * (r + 2);
    T* fused_row = fused + (t * heads + h) * dim;
    const int64_t group_row = t * groups + g;
    T* split_row = j < r ? q + (group_row * r + j) * dim : (j == r ? k : v) + group_row * dim;
    const T* src = kForward ? fused_row : split_row;
    T* dst = kForward ? split_row : fused_row;
    float x1[kVec], x2[kVec];
    PackToF32(LoadPack<kVec>(src + i0), x1);
    PackToF32(LoadPack<kVec>(src + half + i0), x2);
    if (j <= r) {  // queries and the key rotate, the value is copied
      const int64_t pos = TablePosition(positions, t, table_rows);
      RotatePairs<kVec>(table + (pos * half + i0) * 2, kForward ? 1.0f : -1.0f, x1, x2);
    }
    StorePack<kVec>(dst + i0, PackFromF32<T>(x1));
    StorePack<kVec>(dst + half + i0, PackFromF32<T>(x2));
  }
}

void CheckPositions(const Tensor& positions, const Device& dev, int64_t tokens, const char* op) {
  CheckIn(positions, dev, DType::kI32, {tokens}, op, "positions");
}

void CheckTable(const Tensor& table, const Device& dev, int64_t dim, const char* op) {
  CheckOn(table, dev, op, "table");
  CheckDType(table, DType::kF32, op, "table");
  CheckRank(table, 3, op, "table");
  MF_CHECK(table.dim(0) >= 1 && table.dim(1) == dim / 2 && table.dim(2) == 2)
      << op << ": table must be (P ≥ 1, D/2=" << dim / 2 << ", 2), got " << table.DebugString();
}

template <typename T, int kVec>
void LaunchRopeTable(const Tensor& src, const Tensor& positions, const Tensor& table, float sign,
                     Tensor* dst, Stream& stream) {
  const int64_t tokens = src.dim(0);
  const int heads = static_cast<int>(src.dim(1)), half = static_cast<int>(src.dim(2) / 2);
  const int64_t items = tokens * heads * (half / kVec);
  RopeTableKernel<T, kVec>
      <<<DeviceGrid(items, kThreads, kThreads, stream), kThreads, 0, Native(stream)>>>(
          src.data<T>(), positions.data<int32_t>(), table.data<float>(), table.dim(0), sign, tokens,
          heads, half, dst->data<T>());
}

void RotateWithTable(const Tensor& src, const Tensor& positions, const Tensor& table, float sign,
                     Tensor* dst, Stream& stream, const char* op) {
  const Device dev = src.device();
  CheckStream(stream, dev, op);
  CheckActivation(src, dev, op, "input");
  CheckRank(src, 3, op, "input");
  const int64_t tokens = src.dim(0), heads = src.dim(1), dim = src.dim(2);
  MF_CHECK(dim % 2 == 0) << op << ": head dim D must be even, got " << src.DebugString();
  MF_CHECK(heads * (dim / 2) < (int64_t{1} << 31)) << op << ": " << src.DebugString();
  CheckPositions(positions, dev, tokens, op);
  CheckTable(table, dev, dim, op);
  CheckOut(dst, dev, src.dtype(), src.shape(), op, "output");
  if (tokens * heads * dim == 0) return;
  MF_DISPATCH_FLOAT(src.dtype(), op, T, {
    WithPackWidth<T>({src.raw_data(), dst->raw_data(), table.raw_data()}, dim / 2, [&](auto width) {
      LaunchRopeTable<T, decltype(width)::value>(src, positions, table, sign, dst, stream);
    });
  });
  MF_CUDA_CHECK_LAUNCH();
}

// Shapes of the fused QKV op (see rope.h): G and D from k, r from q.
struct QkvShape {
  int64_t tokens, groups, r, dim;
};

QkvShape CheckQkv(const Tensor& fused, const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor& positions, const Tensor& table, const Stream& stream,
                  const char* fused_name, const char* op) {
  const Device dev = fused.device();
  CheckStream(stream, dev, op);
  CheckActivation(fused, dev, op, fused_name);
  for (const auto& [t, name] :
       {std::pair<const Tensor*, const char*>{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
    CheckOn(*t, dev, op, name);
    CheckDType(*t, fused.dtype(), op, name);
  }
  CheckRank(k, 3, op, "k");
  QkvShape s{k.dim(0), k.dim(1), 0, k.dim(2)};
  MF_CHECK(s.groups >= 1 && s.dim % 2 == 0)
      << op << ": k must be (T, G ≥ 1, D even), got " << k.DebugString();
  CheckRank(q, 3, op, "q");
  MF_CHECK(q.dim(0) == s.tokens && q.dim(2) == s.dim && q.dim(1) >= s.groups &&
           q.dim(1) % s.groups == 0)
      << op << ": q must be (T, G·r, D) with G=" << s.groups << " from k, got " << q.DebugString();
  s.r = q.dim(1) / s.groups;
  CheckShape(v, k.shape(), op, "v");
  CheckShape(fused, {s.tokens, s.groups * (s.r + 2) * s.dim}, op, fused_name);
  MF_CHECK(s.groups * (s.r + 2) * (s.dim / 2) < (int64_t{1} << 31))
      << op << ": " << fused.DebugString();
  CheckPositions(positions, dev, s.tokens, op);
  CheckTable(table, dev, s.dim, op);
  return s;
}

template <typename T, int kVec, bool kForward>
void LaunchQkv(const QkvShape& s, const Tensor& fused, const Tensor& q, const Tensor& k,
               const Tensor& v, const Tensor& positions, const Tensor& table, Stream& stream) {
  const int half = static_cast<int>(s.dim / 2);
  const int64_t items = s.tokens * s.groups * (s.r + 2) * (half / kVec);
  QkvRopeKernel<T, kVec, kForward>
      <<<DeviceGrid(items, kThreads, kThreads, stream), kThreads, 0, Native(stream)>>>(
          fused.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), positions.data<int32_t>(),
          table.data<float>(), table.dim(0), s.tokens, static_cast<int>(s.groups),
          static_cast<int>(s.r), half);
}

template <bool kForward>
void Qkv(const QkvShape& s, const Tensor& fused, const Tensor& q, const Tensor& k, const Tensor& v,
         const Tensor& positions, const Tensor& table, Stream& stream, const char* op) {
  if (s.tokens * s.groups * s.dim == 0) return;
  MF_DISPATCH_FLOAT(fused.dtype(), op, T, {
    WithPackWidth<T>({fused.raw_data(), q.raw_data(), k.raw_data(), v.raw_data(), table.raw_data()},
                     s.dim / 2, [&](auto width) {
                       LaunchQkv<T, decltype(width)::value, kForward>(s, fused, q, k, v, positions,
                                                                      table, stream);
                     });
  });
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void RopeForward(const Tensor& x, const Tensor& positions, const Tensor& table, Tensor* y,
                 Stream& stream) {
  RotateWithTable(x, positions, table, 1.0f, y, stream, "RopeForward");
}

void RopeBackward(const Tensor& d_y, const Tensor& positions, const Tensor& table, Tensor* d_x,
                  Stream& stream) {
  RotateWithTable(d_y, positions, table, -1.0f, d_x, stream, "RopeBackward");
}

void QkvRopeForward(const Tensor& qkv, const Tensor& positions, const Tensor& table, Tensor* q,
                    Tensor* k, Tensor* v, Stream& stream) {
  constexpr const char* kOp = "QkvRopeForward";
  MF_CHECK(q != nullptr && k != nullptr && v != nullptr) << kOp << ": null output q, k or v";
  const QkvShape s = CheckQkv(qkv, *q, *k, *v, positions, table, stream, "qkv", kOp);
  Qkv<true>(s, qkv, *q, *k, *v, positions, table, stream, kOp);
}

void QkvRopeBackward(const Tensor& d_q, const Tensor& d_k, const Tensor& d_v,
                     const Tensor& positions, const Tensor& table, Tensor* d_qkv, Stream& stream) {
  constexpr const char* kOp = "QkvRopeBackward";
  MF_CHECK(d_qkv != nullptr) << kOp << ": output d_qkv is null";
  const QkvShape s = CheckQkv(*d_qkv, d_q, d_k, d_v, positions, table, stream, "d_qkv", kOp);
  Qkv<false>(s, *d_qkv, d_q, d_k, d_v, positions, table, stream, kOp);
}

}  // namespace moefold::ops::cuda
