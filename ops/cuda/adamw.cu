// CUDA AdamW over flat f32 buffers: one fused pass reading g, p, m, v and writing p, m, v, with the
// bias corrections computed on the host exactly as the CPU reference (f64, then f32).
#include <cmath>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;

struct AdamWScalars {
  float step_size, bias_correction2_sqrt, decay, beta1, beta2, eps;
};

__global__ void AdamWKernel(AdamWScalars c, const float* g, float* p, float* m, float* v,
                            int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float grad = g[i];
    float param = p[i] * c.decay;
    const float mi = c.beta1 * m[i] + (1.0f - c.beta1) * grad;
    const float vi = c.beta2 * v[i] + (1.0f - c.beta2) * grad * grad;
    const float denom = sqrtf(vi) / c.bias_correction2_sqrt + c.eps;
    param -= c.step_size * mi / denom;
    p[i] = param;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

void AdamWStep(const AdamWOptions& options, const Tensor& grad, Tensor* param, Tensor* m, Tensor* v,
               Stream& stream) {
  constexpr const char* kOp = "AdamWStep";
  MF_CHECK(param != nullptr && m != nullptr && v != nullptr) << kOp << ": null state tensor";
  const Device dev = param->device();
  CheckStream(stream, dev, kOp);
  for (const auto& [t, name] : {std::pair<const Tensor*, const char*>{&grad, "grad"},
                                {param, "param"},
                                {m, "m"},
                                {v, "v"}}) {
    CheckOn(*t, dev, kOp, name);
    CheckDType(*t, DType::kF32, kOp, name);
  }
  const int64_t n = param->numel();
  MF_CHECK(grad.numel() == n && m->numel() == n && v->numel() == n)
      << kOp << ": element counts differ: param " << param->DebugString() << ", grad "
      << grad.DebugString() << ", m " << m->DebugString() << ", v " << v->DebugString();
  MF_CHECK_GE(options.step, 1) << kOp << ": step is 1-based";
  const double step = static_cast<double>(options.step);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(options.beta1), step);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(options.beta2), step);
  const AdamWScalars c{static_cast<float>(options.lr / bias_correction1),
                       static_cast<float>(std::sqrt(bias_correction2)),
                       1.0f - options.lr * options.weight_decay,
                       options.beta1,
                       options.beta2,
                       options.eps};
  if (n == 0) return;
  AdamWKernel<<<GridFor(n, kThreads), kThreads, 0, Native(stream)>>>(
      c, grad.data<float>(), param->data<float>(), m->data<float>(), v->data<float>(), n);
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
