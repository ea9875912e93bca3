// CUDA SwiGLU: out = silu(g)·u forward; d_up = d·silu(g), d_gate = d·u·σ(g)·(1 + g·(1 − σ(g))).
// f32 math with expf (not __expf) so f32 parity holds; d_out may alias d_gate or d_up.
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
__global__ void SwiGluForwardKernel(const T* gate, const T* up, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = ToF32(gate[i]);
    out[i] = FromF32<T>(g * Sigmoid(g) * ToF32(up[i]));
  }
}

template <typename T>
__global__ void SwiGluBackwardKernel(const T* gate, const T* up, const T* d_out, T* d_gate, T* d_up,
                                     int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = ToF32(gate[i]), u = ToF32(up[i]), d = ToF32(d_out[i]);
    const float s = Sigmoid(g);
    d_up[i] = FromF32<T>(d * g * s);
    d_gate[i] = FromF32<T>(d * u * s * (1.0f + g * (1.0f - s)));
  }
}

void CheckPair(const Tensor& gate, const Tensor& up, const Stream& stream, const char* op) {
  CheckStream(stream, gate.device(), op);
  CheckActivation(gate, gate.device(), op, "gate");
  CheckRank(gate, 2, op, "gate");
  CheckOn(up, gate.device(), op, "up");
  CheckDType(up, gate.dtype(), op, "up");
  CheckShape(up, gate.shape(), op, "up");
}

}  // namespace

void SwiGluForward(const Tensor& gate, const Tensor& up, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "SwiGluForward";
  CheckPair(gate, up, stream, kOp);
  CheckOut(out, gate.device(), gate.dtype(), gate.shape(), kOp, "out");
  const int64_t n = gate.numel();
  if (n == 0) return;
  MF_DISPATCH_FLOAT(gate.dtype(), kOp, T,
                    SwiGluForwardKernel<T><<<GridFor(n, kThreads), kThreads, 0, Native(stream)>>>(
                        gate.data<T>(), up.data<T>(), out->data<T>(), n));
  MF_CUDA_CHECK_LAUNCH();
}

void SwiGluBackward(const Tensor& gate, const Tensor& up, const Tensor& d_out, Tensor* d_gate,
                    Tensor* d_up, Stream& stream) {
  constexpr const char* kOp = "SwiGluBackward";
  CheckPair(gate, up, stream, kOp);
  CheckOn(d_out, gate.device(), kOp, "d_out");
  CheckDType(d_out, gate.dtype(), kOp, "d_out");
  CheckShape(d_out, gate.shape(), kOp, "d_out");
  CheckOut(d_gate, gate.device(), gate.dtype(), gate.shape(), kOp, "d_gate");
  CheckOut(d_up, gate.device(), gate.dtype(), gate.shape(), kOp, "d_up");
  const int64_t n = gate.numel();
  if (n == 0) return;
  MF_DISPATCH_FLOAT(
      gate.dtype(), kOp, T,
      SwiGluBackwardKernel<T><<<GridFor(n, kThreads), kThreads, 0, Native(stream)>>>(
          gate.data<T>(), up.data<T>(), d_out.data<T>(), d_gate->data<T>(), d_up->data<T>(), n));
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
