// Tests of global grad-norm clipping: the norm of known tensors, clipping to max_norm (as PyTorch's
// max_norm/(norm+1e-6)), bit-exact no-op below the threshold and the pieces a multi-rank sum uses.
#include "optim/grad_clip.h"

#include <cmath>
#include <limits>

#include "tests/testing/testing.h"

namespace moefold::optim {
namespace {

TEST(GradClipTest, NormOfKnownTensors) {
  // ‖(3, 4)‖² + ‖(1, 2, 2; 0, 0, 0)‖² = 25 + 9 = 34.
  const Tensor a = Tensor::FromVector({3.0f, 4.0f}, {2});
  const Tensor b = Tensor::FromVector({1.0f, 2.0f, 2.0f, 0.0f, 0.0f, 0.0f}, {2, 3});
  EXPECT_DOUBLE_EQ(SumSquares({&a, &b}), 34.0);
  EXPECT_DOUBLE_EQ(GlobalGradNorm({&a, &b}), std::sqrt(34.0));
  EXPECT_DOUBLE_EQ(GlobalGradNorm({&a}), 5.0);
  const Tensor undefined;
  EXPECT_DOUBLE_EQ(GlobalGradNorm({&a, nullptr, &undefined}), 5.0);
}

TEST(GradClipTest, ClipScalesToMaxNorm) {
  Tensor a = Tensor::FromVector({3.0f, 4.0f}, {2});
  Tensor b = Tensor::FromVector({0.0f, 12.0f}, {1, 2});  // total norm 13
  const double norm = ClipGradNorm({&a, &b}, 1.0);
  EXPECT_DOUBLE_EQ(norm, 13.0);  // the pre-clip norm
  const float scale = static_cast<float>(1.0 / (13.0 + 1e-6));
  EXPECT_TENSOR_NEAR(a, Tensor::FromVector({3.0f * scale, 4.0f * scale}, {2}), 1e-7, 0);
  EXPECT_TENSOR_NEAR(b, Tensor::FromVector({0.0f, 12.0f * scale}, {1, 2}), 1e-7, 0);
  EXPECT_NEAR(GlobalGradNorm({&a, &b}), 1.0, 1e-6);
}

TEST(GradClipTest, BelowThresholdIsExactNoOp) {
  const Tensor original = testing::RandomNormal({4, 5}, 7, 0.1f);
  Tensor g = original.Clone();
  const double norm = ClipGradNorm({&g}, 100.0);
  EXPECT_GT(norm, 0.0);
  EXPECT_EQ(g.ToVector(), original.ToVector());
  EXPECT_DOUBLE_EQ(ClipGradNorm({&g}, 0.0), norm);  // max_norm 0 = clipping off
  EXPECT_EQ(g.ToVector(), original.ToVector());
}

TEST(GradClipTest, ClipScaleRules) {
  EXPECT_DOUBLE_EQ(ClipScale(0.5, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(ClipScale(1.0, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(ClipScale(4.0, 2.0), 2.0 / (4.0 + 1e-6));
  EXPECT_DOUBLE_EQ(ClipScale(4.0, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(ClipScale(std::numeric_limits<double>::infinity(), 1.0), 1.0);
  EXPECT_DOUBLE_EQ(ClipScale(std::nan(""), 1.0), 1.0);
}

TEST(GradClipTest, ShardedSumEqualsWholeNorm) {
  // The multi-rank recipe: each shard's SumSquares added before the sqrt, then ClipScale and
  // ScaleGrads on each shard, equals clipping the whole tensor at once.
  const Tensor whole = testing::RandomNormal({8, 3}, 11);
  Tensor s0 = whole.Slice(0, 5).Clone(), s1 = whole.Slice(5, 8).Clone();
  const double norm = std::sqrt(SumSquares({&s0}) + SumSquares({&s1}));
  EXPECT_NEAR(norm, GlobalGradNorm({&whole}), 1e-12);
  const float scale = static_cast<float>(ClipScale(norm, 0.5));
  ScaleGrads({&s0}, scale);
  ScaleGrads({&s1}, scale);
  Tensor reference = whole.Clone();
  ClipGradNorm({&reference}, 0.5);
  EXPECT_EQ(s0.ToVector(), reference.Slice(0, 5).ToVector());
  EXPECT_EQ(s1.ToVector(), reference.Slice(5, 8).ToVector());
}

}  // namespace
}  // namespace moefold::optim
