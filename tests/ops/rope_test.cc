// Tests of RoPE: identity at position 0, hand-computed rotations, norm preservation per pair, the
// inverse, in-place use, and a finite-difference check of the backward.
#include "ops/rope.h"

#include <cmath>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;

constexpr float kTheta = 10000.0f;

TEST(RopeTest, PositionZeroIsIdentity) {
  const Tensor x = RandomNormal({3, 2, 8}, 1);
  const Tensor pos = Tensor::FromVectorI32({0, 0, 0}, {3});
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, kTheta, &y, CpuStream());
  EXPECT_TENSOR_NEAR(y, x, 0, 0);
}

TEST(RopeTest, HandValueRotateHalfLayout) {
  // D = 4: element 0 pairs with 2 (angle pos·1), element 1 with 3 (angle pos·theta^(-1/2) =
  // pos/100).
  const Tensor x = Tensor::FromVector({1, 1, 0, 0}, {1, 1, 4});
  const Tensor pos = Tensor::FromVectorI32({3}, {1});
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, kTheta, &y, CpuStream());
  const Tensor expected = Tensor::FromVector(
      {std::cos(3.0f), std::cos(0.03f), std::sin(3.0f), std::sin(0.03f)}, {1, 1, 4});
  EXPECT_TENSOR_NEAR(y, expected, 1e-6, 1e-7);
}

TEST(RopeTest, PreservesPairNormsAndBackwardInvertsForward) {
  const int64_t t = 4, n = 3, d = 6;
  const Tensor x = RandomNormal({t, n, d}, 2);
  const Tensor pos = RandomInts({t}, 3, 4096);
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, kTheta, &y, CpuStream());
  for (int64_t r = 0; r < t * n; ++r) {
    for (int64_t i = 0; i < d / 2; ++i) {
      const float* a = x.data<float>() + r * d;
      const float* b = y.data<float>() + r * d;
      EXPECT_NEAR(std::hypot(a[i], a[i + d / 2]), std::hypot(b[i], b[i + d / 2]), 1e-5);
    }
  }
  Tensor back = y.Clone();
  RopeBackward(back, pos, kTheta, &back, CpuStream());  // in place: d_x aliases d_y
  EXPECT_TENSOR_NEAR(back, x, 1e-5, 1e-6);
}

TEST(RopeTest, InPlaceForwardMatchesOutOfPlace) {
  const Tensor x = RandomNormal({2, 2, 4}, 4);
  const Tensor pos = Tensor::FromVectorI32({5, 17}, {2});
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, kTheta, &y, CpuStream());
  Tensor z = x.Clone();
  RopeForward(z, pos, kTheta, &z, CpuStream());
  EXPECT_TENSOR_NEAR(z, y, 0, 0);
}

TEST(RopeTest, BackwardMatchesFiniteDifferences) {
  Tensor x = RandomNormal({3, 2, 4}, 5);
  const Tensor pos = Tensor::FromVectorI32({0, 7, 300}, {3});
  const Tensor cot = RandomNormal(x.shape(), 6);
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  auto loss = [&] {
    RopeForward(x, pos, kTheta, &y, CpuStream());
    return Dot(y, cot);
  };
  Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32);
  RopeBackward(cot, pos, kTheta, &d_x, CpuStream());
  EXPECT_TRUE(GradientMatches(d_x, loss, &x));
}

TEST(RopeDeathTest, OddHeadDimIsRejected) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor x = Tensor::Zeros({1, 1, 3}, DType::kF32);
  const Tensor pos = Tensor::FromVectorI32({0}, {1});
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  EXPECT_DEATH(RopeForward(x, pos, kTheta, &y, CpuStream()), "head dim D must be even");
}

}  // namespace
}  // namespace moefold::ops
