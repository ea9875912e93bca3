// CUDA rotary position embedding (Hugging Face rotate_half layout): one thread per (token, head,
// pair). Angles in f64 as in the CPU reference (pos·inv_freq loses bits in f32 at long
// positions); each thread reads its pair before writing it, so y may alias x.
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void RotateKernel(const T* in, const int32_t* positions, double theta, int sign,
                             int64_t tokens, int64_t heads, int64_t dim, T* out) {
  const int64_t half = dim / 2;
  const int64_t pairs = tokens * heads * half;
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < pairs;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = p % half;
    const int64_t row = p / half;  // t·heads + n
    const int64_t t = row / heads;
    const double inv_freq = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
    double s, c;
    sincos(static_cast<double>(positions[t]) * inv_freq, &s, &c);
    const float cf = static_cast<float>(c), sf = static_cast<float>(sign * s);
    const int64_t base = row * dim;
    const float x1 = ToF32(in[base + i]), x2 = ToF32(in[base + i + half]);
    out[base + i] = FromF32<T>(x1 * cf - x2 * sf);
    out[base + i + half] = FromF32<T>(x2 * cf + x1 * sf);
  }
}

void Rotate(const Tensor& src, const Tensor& positions, float theta, int sign, Tensor* dst,
            Stream& stream, const char* op) {
  const Device dev = src.device();
  CheckStream(stream, dev, op);
  CheckActivation(src, dev, op, "input");
  CheckRank(src, 3, op, "input");
  const int64_t tokens = src.dim(0), heads = src.dim(1), dim = src.dim(2);
  MF_CHECK(dim % 2 == 0) << op << ": head dim D must be even, got " << src.DebugString();
  MF_CHECK(theta > 0.0f) << op << ": theta must be positive, got " << theta;
  CheckOn(positions, dev, op, "positions");
  CheckDType(positions, DType::kI32, op, "positions");
  CheckShape(positions, {tokens}, op, "positions");
  CheckOut(dst, dev, src.dtype(), src.shape(), op, "output");
  const int64_t pairs = tokens * heads * (dim / 2);
  if (pairs == 0) return;
  MF_DISPATCH_FLOAT(src.dtype(), op, T,
                    RotateKernel<T><<<GridFor(pairs, kThreads), kThreads, 0, Native(stream)>>>(
                        src.data<T>(), positions.data<int32_t>(), theta, sign, tokens, heads, dim,
                        dst->data<T>()));
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void RopeForward(const Tensor& x, const Tensor& positions, float theta, Tensor* y, Stream& stream) {
  Rotate(x, positions, theta, +1, y, stream, "RopeForward");
}

void RopeBackward(const Tensor& d_y, const Tensor& positions, float theta, Tensor* d_x,
                  Stream& stream) {
  Rotate(d_y, positions, theta, -1, d_x, stream, "RopeBackward");
}

}  // namespace moefold::ops::cuda
