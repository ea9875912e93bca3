// Helpers for the ops' gradient checks: accumulation deltas and a one-line finite-difference check.
// Backward ops that accumulate (+=) are called on a random pre-filled buffer; Delta recovers the
// part they added, so one check covers both the gradient and the accumulation contract.
#pragma once

#include <functional>

#include "tests/testing/testing.h"

namespace moefold::ops::testing {

// a − b element-wise (f32, same shape).
inline Tensor Delta(const Tensor& a, const Tensor& b) {
  Tensor out = a.Clone();
  for (int64_t i = 0; i < out.numel(); ++i) out.data<float>()[i] -= b.data<float>()[i];
  return out;
}

// analytic ≈ ∂f/∂x by central differences (eps 1e-2 suits the f32 ops; tolerance 1e-2 relative).
inline ::testing::AssertionResult GradientMatches(const Tensor& analytic,
                                                  const std::function<double()>& f, Tensor* x,
                                                  double eps = 1e-2, double rtol = 1e-2,
                                                  double atol = 1e-3) {
  return ::moefold::testing::TensorNear(analytic, ::moefold::testing::NumericGradient(f, x, eps),
                                        rtol, atol);
}

}  // namespace moefold::ops::testing
