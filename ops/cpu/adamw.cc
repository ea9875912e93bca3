// CPU reference of AdamW, step for step as PyTorch's torch.optim.AdamW (single-tensor path):
// decoupled decay p *= 1 − lr·wd first, then the bias-corrected Adam update. The bias corrections
// are computed in f64 like PyTorch's Python scalars; the per-element math is f32.
#include "ops/adamw.h"

#include <cmath>

#include "ops/cpu/check.h"

namespace moefold::ops {

void AdamWStep(const AdamWOptions& options, const Tensor& grad, Tensor* param, Tensor* m, Tensor* v,
               Stream& stream) {
  MF_RETURN_IF_GPU(grad, "AdamWStep", cuda::AdamWStep(options, grad, param, m, v, stream));
  constexpr const char* kOp = "AdamWStep";
  MF_CHECK(param != nullptr && m != nullptr && v != nullptr) << kOp << ": null state tensor";
  internal::CheckF32(grad, kOp, "grad");
  internal::CheckF32(*param, kOp, "param");
  internal::CheckF32(*m, kOp, "m");
  internal::CheckF32(*v, kOp, "v");
  const int64_t n = param->numel();
  MF_CHECK(grad.numel() == n && m->numel() == n && v->numel() == n)
      << kOp << ": element counts differ: param " << param->DebugString() << ", grad "
      << grad.DebugString() << ", m " << m->DebugString() << ", v " << v->DebugString();
  MF_CHECK_GE(options.step, 1) << kOp << ": step is 1-based";
  const double step = static_cast<double>(options.step);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(options.beta1), step);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(options.beta2), step);
  const float step_size = static_cast<float>(options.lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float decay = 1.0f - options.lr * options.weight_decay;
  const float b1 = options.beta1, b2 = options.beta2;
  const float* g = grad.data<float>();
  float* p = param->data<float>();
  float* pm = m->data<float>();
  float* pv = v->data<float>();
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    pm[i] = b1 * pm[i] + (1.0f - b1) * g[i];
    pv[i] = b2 * pv[i] + (1.0f - b2) * g[i] * g[i];
    const float denom = std::sqrt(pv[i]) / bias_correction2_sqrt + options.eps;
    p[i] -= step_size * pm[i] / denom;
  }
}

}  // namespace moefold::ops
