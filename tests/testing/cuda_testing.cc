// Implementation of the GPU parity check.
#include "tests/testing/cuda_testing.h"

#include <algorithm>
#include <cmath>

#include "tests/testing/testing.h"

namespace moefold::testing {

::testing::AssertionResult ParityNear(const Tensor& actual, const Tensor& expected, DType dtype,
                                      double scale) {
  const Tensor a_host = ToHostF32(actual);
  const Tensor e_host = ToHostF32(expected);
  if (a_host.shape() != e_host.shape()) {
    return ::testing::AssertionFailure()
           << "shape " << actual.DebugString() << " vs " << expected.DebugString();
  }
  const std::vector<float> a = a_host.ToVector();
  const std::vector<float> e = e_host.ToVector();
  const double tol = DefaultTolerance(dtype) * scale;
  double diff2 = 0, ref2 = 0, max_ref = 0;
  for (size_t i = 0; i < e.size(); ++i) max_ref = std::max(max_ref, std::fabs(double{e[i]}));
  int64_t worst = -1, failures = 0;
  double worst_excess = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double{a[i]} - e[i]);
    diff2 += d * d;
    ref2 += double{e[i]} * e[i];
    const double bound = tol * (std::fabs(double{e[i]}) + max_ref);
    if (!(d <= bound)) {
      ++failures;
      const double excess = std::isnan(d) ? INFINITY : d - bound;
      if (worst < 0 || excess > worst_excess) {
        worst = static_cast<int64_t>(i);
        worst_excess = excess;
      }
    }
  }
  const double rel = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  if (failures == 0 && rel <= tol) return ::testing::AssertionSuccess();
  ::testing::AssertionResult r = ::testing::AssertionFailure();
  r << "relative L2 error " << rel << " (tolerance " << tol << "), " << failures << " of "
    << a.size() << " elements out of bounds";
  if (worst >= 0) {
    r << "; worst at flat index " << worst << ": actual " << a[worst] << " expected " << e[worst];
  }
  return r;
}

}  // namespace moefold::testing
