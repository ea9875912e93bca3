// CPU reference of AdamW, step for step as PyTorch's torch.optim.AdamW (single-tensor path):
// decoupled decay p *= 1 − lr·wd first, then the bias-corrected Adam update. The bias corrections
// are computed in f64 like PyTorch's Python scalars; the per-element math is f32, one function for
// the per-parameter and the flat step, so the two agree bit for bit.
#include "ops/adamw.h"

#include <cmath>

#include "core/dtype.h"
#include "ops/cpu/adamw_scalars.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

using internal::AdamWScalars;

// One element of the update, p *= decay first.
inline void Update(const AdamWScalars& c, float decay, float g, float* p, float* m, float* v) {
  *p *= decay;
  *m = c.beta1 * *m + (1.0f - c.beta1) * g;
  *v = c.beta2 * *v + (1.0f - c.beta2) * g * g;
  const float denom = std::sqrt(*v) / c.bias_correction2_sqrt + c.eps;
  *p -= c.step_size * *m / denom;
}

void CheckState(const Tensor& grad, const Tensor* param, const Tensor* m, const Tensor* v,
                const char* op) {
  MF_CHECK(param != nullptr && m != nullptr && v != nullptr) << op << ": null state tensor";
  internal::CheckF32(grad, op, "grad");
  internal::CheckF32(*param, op, "param");
  internal::CheckF32(*m, op, "m");
  internal::CheckF32(*v, op, "v");
  const int64_t n = param->numel();
  MF_CHECK(grad.numel() == n && m->numel() == n && v->numel() == n)
      << op << ": element counts differ: param " << param->DebugString() << ", grad "
      << grad.DebugString() << ", m " << m->DebugString() << ", v " << v->DebugString();
}

}  // namespace

namespace internal {

AdamWScalars AdamWScalarsOf(const AdamWOptions& options, const char* op) {
  MF_CHECK_GE(options.step, 1) << op << ": step is 1-based";
  const double step = static_cast<double>(options.step);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(options.beta1), step);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(options.beta2), step);
  return AdamWScalars{static_cast<float>(options.lr / bias_correction1),
                      static_cast<float>(std::sqrt(bias_correction2)),
                      1.0f - options.lr * options.weight_decay,
                      1.0f - options.lr * 0.0f,
                      options.beta1,
                      options.beta2,
                      options.eps};
}

}  // namespace internal

void AdamWStep(const AdamWOptions& options, const Tensor& grad, Tensor* param, Tensor* m, Tensor* v,
               Stream& stream) {
  MF_RETURN_IF_GPU(grad, "AdamWStep", cuda::AdamWStep(options, grad, param, m, v, stream));
  constexpr const char* kOp = "AdamWStep";
  CheckState(grad, param, m, v, kOp);
  const AdamWScalars c = internal::AdamWScalarsOf(options, kOp);
  const float* g = grad.data<float>();
  float* p = param->data<float>();
  float* pm = m->data<float>();
  float* pv = v->data<float>();
  for (int64_t i = 0; i < param->numel(); ++i) Update(c, c.decay, g[i], p + i, pm + i, pv + i);
}

void AdamWFlatStep(const AdamWOptions& options, const Tensor& grad, const Tensor& grad_scale,
                   const Tensor& no_decay_ranges, Tensor* param, Tensor* m, Tensor* v,
                   Tensor* compute, Stream& stream) {
  constexpr const char* kOp = "AdamWFlatStep";
  MF_RETURN_IF_GPU(grad, kOp,
                   cuda::AdamWFlatStep(options, grad, grad_scale, no_decay_ranges, param, m, v,
                                       compute, stream));
  CheckState(grad, param, m, v, kOp);
  const int64_t n = param->numel();
  internal::CheckF32(grad_scale, kOp, "grad_scale");
  internal::CheckShape(grad_scale, {1}, kOp, "grad_scale");
  internal::CheckCpu(no_decay_ranges, kOp, "no_decay_ranges");
  internal::CheckDType(no_decay_ranges, DType::kI64, kOp, "no_decay_ranges");
  internal::CheckRank(no_decay_ranges, 2, kOp, "no_decay_ranges");
  MF_CHECK_EQ(no_decay_ranges.dim(1), 2)
      << kOp << ": no_decay_ranges " << no_decay_ranges.DebugString();
  const int64_t num_ranges = no_decay_ranges.dim(0);
  const int64_t* ranges = no_decay_ranges.data<int64_t>();
  for (int64_t r = 0; r < num_ranges; ++r) {
    const int64_t lower = r == 0 ? 0 : ranges[2 * r - 1];
    MF_CHECK(lower <= ranges[2 * r] && ranges[2 * r] <= ranges[2 * r + 1] && ranges[2 * r + 1] <= n)
        << kOp << ": no-decay range " << r << " [" << ranges[2 * r] << ", " << ranges[2 * r + 1]
        << ") is not sorted, disjoint and within [0, N=" << n << ")";
  }
  const bool write_compute = compute != nullptr && compute->defined();
  if (write_compute) {
    internal::CheckCpu(*compute, kOp, "compute");
    internal::CheckDType(*compute, DType::kBF16, kOp, "compute");
    MF_CHECK_EQ(compute->numel(), n) << kOp << ": compute " << compute->DebugString();
  }
  const AdamWScalars c = internal::AdamWScalarsOf(options, kOp);
  const float scale = grad_scale.data<float>()[0];
  const float* g = grad.data<float>();
  float* p = param->data<float>();
  float* pm = m->data<float>();
  float* pv = v->data<float>();
  int64_t r = 0;  // the first range that ends after element i
  for (int64_t i = 0; i < n; ++i) {
    while (r < num_ranges && ranges[2 * r + 1] <= i) ++r;
    const bool decayed = r == num_ranges || i < ranges[2 * r];
    Update(c, decayed ? c.decay : c.no_decay, g[i] * scale, p + i, pm + i, pv + i);
    if (write_compute) compute->data<uint16_t>()[i] = FloatToBf16(p[i]);
  }
}

}  // namespace moefold::ops
