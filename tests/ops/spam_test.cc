// Tests of the SPAM gradient transforms against hand-computed values: per-segment max|g| and Σg²
// (with and without the clip), the clip-and-scale, and SPAM's spike clip (both signs, theta 0).
#include "ops/spam.h"

#include <algorithm>
#include <vector>

#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

Tensor Segments(const std::vector<int64_t>& ranges) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(ranges.size() / 2), 2}, DType::kI64);
  std::copy(ranges.begin(), ranges.end(), t.data<int64_t>());
  return t;
}

TEST(SpamOpsTest, SegmentStatsOfTheScaledGradient) {
  // Scale 2: segment 0 = (2, −6) → max 6, Σ 40; element 2 is padding; segment 1 = (8, 0, −2)
  // → max 8, Σ 68.
  const Tensor grad = Tensor::FromVector({1, -3, 100, 4, 0, -1}, {6});
  Tensor stats = Tensor::Empty({2, 2}, DType::kF32);
  SegmentGradStats(grad, Tensor::FromVector({2}, {1}), Segments({0, 2, 3, 6}), Tensor(), &stats,
                   CpuStream());
  EXPECT_EQ(stats.ToVector(), (std::vector<float>{6, 40, 8, 68}));
  // Clip: segment 0 entries above 5 ×0.5 → (2, −3): max 3, Σ 13; segment 1 none above 10.
  SegmentGradStats(grad, Tensor::FromVector({2}, {1}), Segments({0, 2, 3, 6}),
                   Tensor::FromVector({5, 0.5f, 10, 0.25f}, {2, 2}), &stats, CpuStream());
  EXPECT_EQ(stats.ToVector(), (std::vector<float>{3, 13, 8, 68}));
}

TEST(SpamOpsTest, SegmentClipScaleLeavesPaddingAlone) {
  Tensor grad = Tensor::FromVector({1, -3, 100, 4, 0, -1}, {6});
  // Scale 2; segment 0: clip above 5 by 0.5, then ×3 → (6, −9); segment 1: no clip, ×0.5 → (4, 0, −1).
  SegmentClipScale(Segments({0, 2, 3, 6}), Tensor::FromVector({5, 0.5f, 3, 10, 1, 0.5f}, {2, 3}),
                   Tensor::FromVector({2}, {1}), &grad, CpuStream());
  EXPECT_EQ(grad.ToVector(), (std::vector<float>{6, -9, 100, 4, 0, -1}));
}

TEST(SpamOpsTest, SpikeClipAgainstTheSecondMoment) {
  // Scale 2, θ 4: g = (2, −6, 1, 0); θv = (16, 4, 0, 0) → (2, −2, 1 clipped to 0, 0).
  Tensor grad = Tensor::FromVector({1, -3, 0.5f, 0}, {4});
  const Tensor v = Tensor::FromVector({4, 1, 0, 0}, {4});
  SpamSpikeClip(Tensor::FromVector({2}, {1}), v, 4, &grad, CpuStream());
  EXPECT_EQ(grad.ToVector(), (std::vector<float>{2, -2, 0, 0}));
  // theta 0 only scales.
  Tensor g2 = Tensor::FromVector({1, -3}, {2});
  SpamSpikeClip(Tensor::FromVector({2}, {1}), Tensor::Zeros({2}, DType::kF32), 0, &g2, CpuStream());
  EXPECT_EQ(g2.ToVector(), (std::vector<float>{2, -6}));
}

TEST(SpamOpsDeathTest, RefusesUnsortedSegments) {
  const Tensor grad = Tensor::Zeros({4}, DType::kF32);
  Tensor stats = Tensor::Empty({2, 2}, DType::kF32);
  EXPECT_DEATH(SegmentGradStats(grad, Tensor::FromVector({1}, {1}), Segments({2, 4, 0, 1}),
                                Tensor(), &stats, CpuStream()),
               "not sorted");
}

}  // namespace
}  // namespace moefold::ops
