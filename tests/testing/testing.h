// Shared test helpers: status matchers, random tensors, tolerance-aware comparison, finite differences.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

#define EXPECT_OK(expr)                                             \
  do {                                                              \
    const ::absl::Status mf_s_ = ::moefold::testing::ToStatus(expr); \
    EXPECT_TRUE(mf_s_.ok()) << mf_s_;                               \
  } while (0)
#define ASSERT_OK(expr)                              \
  do {                                               \
    const ::absl::Status mf_s_ = ::moefold::testing::ToStatus(expr); \
    ASSERT_TRUE(mf_s_.ok()) << mf_s_;                \
  } while (0)

namespace moefold::testing {

inline absl::Status ToStatus(const absl::Status& s) { return s; }
template <typename T>
absl::Status ToStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// Relative tolerance by dtype (docs/ARCHITECTURE.md §10): f32 1e-5, bf16/f16 1e-2, fp8 compared
// exactly to emulation.
float DefaultTolerance(DType dtype);

// f32 tensor with entries drawn i.i.d. from N(0, stddev²) by Philox (seed fixed per call site).
Tensor RandomNormal(const Shape& shape, uint64_t seed, float stddev = 1.0f);
// i32 tensor with entries uniform in [0, bound).
Tensor RandomInts(const Shape& shape, uint64_t seed, int32_t bound);

// Checks |a - b| <= atol + rtol·|b| element-wise; reports the worst element.
::testing::AssertionResult TensorNear(const Tensor& actual, const Tensor& expected, double rtol,
                                      double atol);
#define EXPECT_TENSOR_NEAR(a, b, rtol, atol) \
  EXPECT_TRUE(::moefold::testing::TensorNear((a), (b), (rtol), (atol)))

// Central finite differences of the scalar f() with respect to every element of x (f32, CPU):
// returns a tensor shaped like x. f is evaluated with x perturbed in place by ±eps.
Tensor NumericGradient(const std::function<double()>& f, Tensor* x, double eps = 1e-3);

// Σ a·b over all elements, in f64 (to turn a tensor output into a scalar loss for gradient checks).
double Dot(const Tensor& a, const Tensor& b);

// Columns [begin, end) of a 2-D CPU tensor (f32 or bf16) as a new contiguous tensor of its dtype:
// a vocabulary or feature shard of a tensor split along its last dimension.
Tensor Columns(const Tensor& t, int64_t begin, int64_t end);

}  // namespace moefold::testing
