// Global gradient-norm clipping (see grad_clip.h): f64 sum of squares, one sqrt, one common scale.
#include "optim/grad_clip.h"

#include <cmath>

#include "ops/elementwise.h"
#include "ops/reduce.h"

namespace moefold::optim {

double SumSquares(const std::vector<const Tensor*>& grads, Stream& stream) {
  double sum = 0.0;
  for (const Tensor* g : grads) {
    if (g == nullptr || !g->defined() || g->numel() == 0) continue;
    sum += ops::SumOfSquares(*g, stream);
  }
  return sum;
}

double GlobalGradNorm(const std::vector<const Tensor*>& grads, Stream& stream) {
  return std::sqrt(SumSquares(grads, stream));
}

double ClipScale(double norm, double max_norm) {
  if (!(max_norm > 0.0) || !std::isfinite(norm) || norm <= max_norm) return 1.0;
  return max_norm / (norm + 1e-6);
}

void ScaleGrads(const std::vector<Tensor*>& grads, float scale, Stream& stream) {
  for (Tensor* g : grads) {
    if (g == nullptr || !g->defined() || g->numel() == 0) continue;
    ops::Scale(scale, g, stream);
  }
}

double ClipGradNorm(const std::vector<Tensor*>& grads, double max_norm, Stream& stream) {
  const std::vector<const Tensor*> const_grads(grads.begin(), grads.end());
  const double norm = GlobalGradNorm(const_grads, stream);
  const double scale = ClipScale(norm, max_norm);
  if (scale != 1.0) ScaleGrads(grads, static_cast<float>(scale), stream);
  return norm;
}

}  // namespace moefold::optim
