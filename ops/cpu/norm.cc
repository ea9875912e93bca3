// CPU reference of RMSNorm: y = x · rstd · w with rstd = 1/sqrt(mean(x²) + eps), per row.
// Row sums are accumulated in f64 so the reference is more accurate than any kernel it checks.
#include "ops/norm.h"

#include <cmath>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"
#include "ops/elementwise.h"

namespace moefold::ops {

void RmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y, Tensor* rstd,
                    Stream& stream) {
  MF_RETURN_IF_GPU(x, "RmsNormForward", cuda::RmsNormForward(x, w, eps, y, rstd, stream));
  if (internal::AnyBf16({&x, &w, y})) {
    internal::Bf16Emulation emu("RmsNormForward");
    emu.SameDType({&x, &w, y}, {"x", "w", "y"});
    emu.IsF32(rstd, "rstd");
    RmsNormForward(emu.In(x), emu.In(w), eps, emu.Out(y), rstd, stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(x, "RmsNormForward", "x");
  internal::CheckRank(x, 2, "RmsNormForward", "x");
  const int64_t rows = x.dim(0), hidden = x.dim(1);
  internal::CheckF32(w, "RmsNormForward", "w");
  internal::CheckShape(w, {hidden}, "RmsNormForward", "w");
  internal::CheckF32Out(y, {rows, hidden}, "RmsNormForward", "y");
  internal::CheckF32Out(rstd, {rows}, "RmsNormForward", "rstd");
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  float* py = y->data<float>();
  float* pr = rstd->data<float>();
  for (int64_t t = 0; t < rows; ++t) {
    const float* xt = px + t * hidden;
    double sum_sq = 0;
    for (int64_t h = 0; h < hidden; ++h) sum_sq += static_cast<double>(xt[h]) * xt[h];
    const float r = static_cast<float>(1.0 / std::sqrt(sum_sq / hidden + eps));
    pr[t] = r;
    for (int64_t h = 0; h < hidden; ++h) py[t * hidden + h] = xt[h] * r * pw[h];
  }
}

void AddRmsNormForward(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                       Tensor* sum, Tensor* y, Tensor* rstd, Stream& stream) {
  MF_RETURN_IF_GPU(x, "AddRmsNormForward",
                   cuda::AddRmsNormForward(x, residual, w, eps, sum, y, rstd, stream));
  // The sum is stored (rounded to its dtype, as on the GPU) before it is normalised; Add and
  // RmsNormForward check the arguments (and emulate bf16).
  Add(x, residual, sum, stream);
  RmsNormForward(*sum, w, eps, y, rstd, stream);
}

namespace {

// With r = rstd and g = d_y · w (element-wise):
//   d_x = r·g − (r³/H)·x·⟨g, x⟩,   d_w += Σ_t d_y · x · r.
// d_x is overwritten, or with `accumulate` added to (the f32 value added once).
void Backward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& d_y, Tensor* d_x,
              Tensor* d_w, bool accumulate, const char* op, Stream& stream) {
  if (internal::AnyBf16({&x, &w, &d_y, d_x})) {
    internal::Bf16Emulation emu(op);
    emu.SameDType({&x, &w, &d_y, d_x}, {"x", "w", "d_y", "d_x"});
    emu.IsF32(&rstd, "rstd");
    emu.IsF32(d_w, "d_w");
    Backward(emu.In(x), emu.In(w), rstd, emu.In(d_y), emu.Out(d_x), d_w, accumulate, op, stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(x, op, "x");
  internal::CheckRank(x, 2, op, "x");
  const int64_t rows = x.dim(0), hidden = x.dim(1);
  internal::CheckF32(w, op, "w");
  internal::CheckShape(w, {hidden}, op, "w");
  internal::CheckF32(rstd, op, "rstd");
  internal::CheckShape(rstd, {rows}, op, "rstd");
  internal::CheckF32(d_y, op, "d_y");
  internal::CheckShape(d_y, x.shape(), op, "d_y");
  if (d_x != nullptr) internal::CheckF32Out(d_x, x.shape(), op, "d_x");
  if (d_w != nullptr) internal::CheckF32Out(d_w, {hidden}, op, "d_w");
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pr = rstd.data<float>();
  const float* pg = d_y.data<float>();
  for (int64_t t = 0; t < rows; ++t) {
    const float* xt = px + t * hidden;
    const float* gt = pg + t * hidden;
    const double r = pr[t];
    if (d_x != nullptr) {
      double dot = 0;  // ⟨d_y·w, x⟩
      for (int64_t h = 0; h < hidden; ++h) dot += static_cast<double>(gt[h]) * pw[h] * xt[h];
      const double c = r * r * r * dot / hidden;
      float* dxt = d_x->data<float>() + t * hidden;
      for (int64_t h = 0; h < hidden; ++h) {
        const float value = static_cast<float>(r * gt[h] * pw[h] - c * xt[h]);
        dxt[h] = accumulate ? dxt[h] + value : value;
      }
    }
    if (d_w != nullptr) {
      float* dw = d_w->data<float>();
      for (int64_t h = 0; h < hidden; ++h) dw[h] += static_cast<float>(gt[h] * xt[h] * r);
    }
  }
}

}  // namespace

void RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& d_y,
                     Tensor* d_x, Tensor* d_w, Stream& stream) {
  MF_RETURN_IF_GPU(x, "RmsNormBackward", cuda::RmsNormBackward(x, w, rstd, d_y, d_x, d_w, stream));
  Backward(x, w, rstd, d_y, d_x, d_w, /*accumulate=*/false, "RmsNormBackward", stream);
}

void RmsNormBackwardAccumulate(const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream) {
  MF_RETURN_IF_GPU(x, "RmsNormBackwardAccumulate",
                   cuda::RmsNormBackwardAccumulate(x, w, rstd, d_y, d_x, d_w, stream));
  Backward(x, w, rstd, d_y, d_x, d_w, /*accumulate=*/true, "RmsNormBackwardAccumulate", stream);
}

}  // namespace moefold::ops
