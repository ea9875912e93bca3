// Implementation of the shared test helpers.
#include "tests/testing/testing.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/philox.h"

namespace moefold::testing {

float DefaultTolerance(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 1e-5f;
    case DType::kBF16:
    case DType::kF16: return 1e-2f;
    default: return 0.0f;
  }
}

Tensor RandomNormal(const Shape& shape, uint64_t seed, float stddev) {
  Tensor t = Tensor::Empty(shape, DType::kF32);
  PhiloxStream rng(seed, /*subsequence=*/0);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = stddev * rng.Normal();
  return t;
}

Tensor RandomInts(const Shape& shape, uint64_t seed, int32_t bound) {
  Tensor t = Tensor::Empty(shape, DType::kI32);
  PhiloxStream rng(seed, /*subsequence=*/1);
  int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<int32_t>(rng.NextU32() % bound);
  return t;
}

::testing::AssertionResult TensorNear(const Tensor& actual, const Tensor& expected, double rtol,
                                      double atol) {
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure() << "shape " << actual.DebugString() << " vs "
                                         << expected.DebugString();
  }
  const std::vector<float> a = actual.ToVector();
  const std::vector<float> b = expected.ToVector();
  int64_t worst = -1, failures = 0;
  double worst_excess = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
    const double bound = atol + rtol * std::fabs(static_cast<double>(b[i]));
    if (!(diff <= bound)) {  // also catches NaN
      ++failures;
      const double excess = std::isnan(diff) ? INFINITY : diff - bound;
      if (worst < 0 || excess > worst_excess) {
        worst = static_cast<int64_t>(i);
        worst_excess = excess;
      }
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << failures << " of " << a.size() << " elements differ; worst at flat index " << worst
         << ": actual " << a[worst] << " expected " << b[worst] << " (rtol " << rtol << ", atol "
         << atol << ")";
}

Tensor NumericGradient(const std::function<double()>& f, Tensor* x, double eps) {
  Tensor grad = Tensor::Zeros(x->shape(), DType::kF32);
  float* p = x->data<float>();
  float* g = grad.data<float>();
  for (int64_t i = 0; i < x->numel(); ++i) {
    const float saved = p[i];
    p[i] = static_cast<float>(saved + eps);
    const double plus = f();
    p[i] = static_cast<float>(saved - eps);
    const double minus = f();
    p[i] = saved;
    g[i] = static_cast<float>((plus - minus) / (2 * eps));
  }
  return grad;
}

double Dot(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.ToVector();
  const std::vector<float> y = b.ToVector();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += static_cast<double>(x[i]) * y[i];
  return s;
}

Tensor Columns(const Tensor& t, int64_t begin, int64_t end) {
  MF_CHECK(t.rank() == 2 && 0 <= begin && begin <= end && end <= t.dim(1))
      << "columns [" << begin << ", " << end << ") of " << t.DebugString();
  const Tensor wide = t.dtype() == DType::kF32 ? t : t.To(DType::kF32);
  Tensor out = Tensor::Empty({t.dim(0), end - begin}, DType::kF32);
  for (int64_t i = 0; i < t.dim(0); ++i) {
    for (int64_t j = begin; j < end; ++j) {
      out.data<float>()[i * (end - begin) + j - begin] = wide.data<float>()[i * t.dim(1) + j];
    }
  }
  return t.dtype() == DType::kF32 ? out : out.To(t.dtype());
}

}  // namespace moefold::testing
