// Tests of RMSNorm: a hand value, finite-difference checks of d_x and the accumulated d_w, and the
// backward that adds d_x into an existing gradient.
#include "ops/norm.h"

#include <cmath>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

TEST(RmsNormTest, HandValue) {
  // mean(x²) = 30/4 = 7.5; with eps 0.5 rstd = 1/sqrt(8).
  const Tensor x = Tensor::FromVector({1, 2, 3, 4}, {1, 4});
  const Tensor w = Tensor::FromVector({1, 2, 0.5f, -1}, {4});
  Tensor y = Tensor::Zeros({1, 4}, DType::kF32);
  Tensor rstd = Tensor::Zeros({1}, DType::kF32);
  RmsNormForward(x, w, 0.5f, &y, &rstd, CpuStream());
  const float r = 1.0f / std::sqrt(8.0f);
  EXPECT_TENSOR_NEAR(rstd, Tensor::FromVector({r}, {1}), 1e-6, 0);
  EXPECT_TENSOR_NEAR(y, Tensor::FromVector({r, 4 * r, 1.5f * r, -4 * r}, {1, 4}), 1e-6, 0);
}

TEST(RmsNormTest, BackwardMatchesFiniteDifferences) {
  const int64_t t = 3, h = 5;
  const float eps = 1e-5f;
  Tensor x = RandomNormal({t, h}, 1);
  Tensor w = RandomNormal({h}, 2);
  const Tensor cot = RandomNormal({t, h}, 3);
  Tensor y = Tensor::Zeros({t, h}, DType::kF32);
  Tensor rstd = Tensor::Zeros({t}, DType::kF32);
  auto loss = [&] {
    RmsNormForward(x, w, eps, &y, &rstd, CpuStream());
    return Dot(y, cot);
  };
  loss();
  Tensor d_x = RandomNormal({t, h}, 4);  // overwritten
  const Tensor d_w_before = RandomNormal({h}, 5);
  Tensor d_w = d_w_before.Clone();  // accumulated
  RmsNormBackward(x, w, rstd, cot, &d_x, &d_w, CpuStream());
  EXPECT_TRUE(GradientMatches(d_x, loss, &x));
  EXPECT_TRUE(GradientMatches(Delta(d_w, d_w_before), loss, &w));
}

TEST(RmsNormTest, FusedResidualAddNormalisesTheSum) {
  const Tensor x = RandomNormal({3, 8}, 6);
  const Tensor residual = RandomNormal({3, 8}, 7);
  const Tensor w = RandomNormal({8}, 8);
  Tensor sum = Tensor::Zeros({3, 8}, DType::kF32), y = Tensor::Zeros({3, 8}, DType::kF32);
  Tensor rstd = Tensor::Zeros({3}, DType::kF32);
  AddRmsNormForward(x, residual, w, 1e-5f, &sum, &y, &rstd, CpuStream());
  Tensor expected_sum = x.Clone();
  for (int64_t i = 0; i < 24; ++i) expected_sum.data<float>()[i] += residual.data<float>()[i];
  EXPECT_TENSOR_NEAR(sum, expected_sum, 0, 0);
  Tensor y_ref = Tensor::Zeros({3, 8}, DType::kF32), rstd_ref = Tensor::Zeros({3}, DType::kF32);
  RmsNormForward(expected_sum, w, 1e-5f, &y_ref, &rstd_ref, CpuStream());
  EXPECT_TENSOR_NEAR(y, y_ref, 0, 0);
  EXPECT_TENSOR_NEAR(rstd, rstd_ref, 0, 0);
}

TEST(RmsNormTest, BackwardAccumulateAddsToDxAndMatchesFiniteDifferences) {
  const int64_t t = 3, h = 5;
  const float eps = 1e-5f;
  Tensor x = RandomNormal({t, h}, 9);
  Tensor w = RandomNormal({h}, 10);
  const Tensor cot = RandomNormal({t, h}, 11);
  Tensor y = Tensor::Zeros({t, h}, DType::kF32);
  Tensor rstd = Tensor::Zeros({t}, DType::kF32);
  auto loss = [&] {
    RmsNormForward(x, w, eps, &y, &rstd, CpuStream());
    return Dot(y, cot);
  };
  loss();
  const Tensor d_x_before = RandomNormal({t, h}, 12), d_w_before = RandomNormal({h}, 13);
  Tensor d_x = d_x_before.Clone(), d_w = d_w_before.Clone();
  RmsNormBackwardAccumulate(x, w, rstd, cot, &d_x, &d_w, CpuStream());
  EXPECT_TRUE(GradientMatches(Delta(d_x, d_x_before), loss, &x));
  EXPECT_TRUE(GradientMatches(Delta(d_w, d_w_before), loss, &w));

  // The added value is exactly RmsNormBackward's d_x, added in f32; d_w accumulates the same way.
  Tensor d_x_plain = Tensor::Zeros({t, h}, DType::kF32), d_w_plain = d_w_before.Clone();
  RmsNormBackward(x, w, rstd, cot, &d_x_plain, &d_w_plain, CpuStream());
  for (int64_t i = 0; i < t * h; ++i) {
    EXPECT_EQ(d_x.data<float>()[i], d_x_before.data<float>()[i] + d_x_plain.data<float>()[i]);
  }
  EXPECT_TENSOR_NEAR(d_w, d_w_plain, 0, 0);
}

TEST(RmsNormTest, BackwardAccumulateInBf16RoundsTheSumOnce) {
  const int64_t t = 2, h = 8;
  const Tensor x = RandomNormal({t, h}, 14).To(DType::kBF16);
  const Tensor w = RandomNormal({h}, 15).To(DType::kBF16);
  const Tensor d_y = RandomNormal({t, h}, 16).To(DType::kBF16);
  const Tensor d_x0 = RandomNormal({t, h}, 17, 10.0f).To(DType::kBF16);
  Tensor rstd = Tensor::Zeros({t}, DType::kF32), y = Tensor::Zeros({t, h}, DType::kBF16);
  RmsNormForward(x, w, 1e-5f, &y, &rstd, CpuStream());
  Tensor d_x = d_x0.Clone();
  RmsNormBackwardAccumulate(x, w, rstd, d_y, &d_x, nullptr, CpuStream());
  // f32 reference: the f32 gradient plus the widened old value, rounded to bf16 once.
  Tensor grad = Tensor::Zeros({t, h}, DType::kF32);
  RmsNormBackward(x.To(DType::kF32), w.To(DType::kF32), rstd, d_y.To(DType::kF32), &grad, nullptr,
                  CpuStream());
  Tensor expected = d_x0.To(DType::kF32);
  for (int64_t i = 0; i < t * h; ++i) expected.data<float>()[i] += grad.data<float>()[i];
  EXPECT_TENSOR_NEAR(d_x.To(DType::kF32), expected.To(DType::kBF16).To(DType::kF32), 0, 0);
}

}  // namespace
}  // namespace moefold::ops
