// Tests of cross entropy: hand values, ignored targets, stability with huge logits, the range
// check, a finite-difference check of the backward with an ignored row, and the per-sample sums
// and means.
#include "ops/loss.h"

#include <cmath>
#include <vector>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

struct Losses {
  Tensor token_losses, lse;
};

Losses Forward(const Tensor& logits, const Tensor& targets) {
  Losses l{Tensor::Zeros({logits.dim(0)}, DType::kF32),
           Tensor::Zeros({logits.dim(0)}, DType::kF32)};
  CrossEntropyForward(logits, targets, &l.token_losses, &l.lse, CpuStream());
  return l;
}

TEST(CrossEntropyTest, HandValues) {
  // Row 0: uniform over 3 -> ln 3. Row 1: log(e + e² + e³) − 1. Row 2: ignored -> 0.
  // Row 3: logits (1000, 0), target 1 -> 1000 (finite: the max is subtracted first).
  const Tensor logits = Tensor::FromVector({0, 0, 0, 1, 2, 3, 5, 6, 7, 1000, 0, 0}, {4, 3});
  const Tensor targets = Tensor::FromVectorI32({2, 0, -1, 1}, {4});
  const Losses l = Forward(logits, targets);
  const double row1 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 1.0;
  EXPECT_TENSOR_NEAR(l.token_losses,
                     Tensor::FromVector({std::log(3.0f), static_cast<float>(row1), 0, 1000}, {4}),
                     1e-6, 1e-6);
  EXPECT_NEAR(l.lse.data<float>()[3], 1000.0f, 1e-3);
}

TEST(CrossEntropyTest, BackwardMatchesFiniteDifferencesWithIgnoredTarget) {
  Tensor logits = RandomNormal({4, 5}, 1, 2.0f);
  const Tensor targets = Tensor::FromVectorI32({3, -1, 0, 4}, {4});
  const Tensor d_losses = RandomNormal({4}, 2);
  auto loss = [&] { return Dot(Forward(logits, targets).token_losses, d_losses); };
  const Losses l = Forward(logits, targets);
  Tensor d_logits = RandomNormal({4, 5}, 3);  // overwritten, including the ignored row
  CrossEntropyBackward(logits, targets, l.lse, d_losses, &d_logits, CpuStream());
  EXPECT_TRUE(GradientMatches(d_logits, loss, &logits));
  for (int v = 0; v < 5; ++v) EXPECT_EQ(d_logits.data<float>()[5 + v], 0.0f);
}

TEST(CrossEntropyDeathTest, TargetOutOfRangeNamesTargetAndVocab) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor logits = Tensor::Zeros({2, 4}, DType::kF32);
  EXPECT_DEATH(Forward(logits, Tensor::FromVectorI32({0, 5}, {2})),
               "target 5 at row 1 is out of range \\[0, V=4\\)");
  EXPECT_DEATH(Forward(logits, Tensor::FromVectorI32({-2, 0}, {2})), "target -2 at row 0");
}

TEST(SampleLossTest, SumsCountsAndMeans) {
  // B = 3 samples of S = 3 tokens; sample 2 has no target at all.
  const Tensor losses = Tensor::FromVector({1, 2, 4, 0.5f, 9, 1.5f, 7, 7, 7}, {9});
  const Tensor targets = Tensor::FromVectorI32({5, 0, 1, 2, -1, 3, -1, -1, -1}, {3, 3});
  Tensor sums = RandomNormal({2, 3}, 1);  // overwritten
  SampleLossSums(losses, targets, &sums, CpuStream());
  EXPECT_TENSOR_NEAR(sums, Tensor::FromVector({7, 2, 0, 3, 2, 0}, {2, 3}), 0, 0);
  // Flat targets give the same sums.
  Tensor flat_sums = Tensor::Zeros({2, 3}, DType::kF32);
  SampleLossSums(losses, targets.Reshape({9}), &flat_sums, CpuStream());
  EXPECT_TENSOR_NEAR(flat_sums, sums, 0, 0);

  Tensor total = Tensor::FromVector({0.25f}, {1});
  AccumulateSampleMeans(sums, &total, CpuStream());  // 0.25 + 7/3 + 2/2 + 0
  EXPECT_EQ(total.data<float>()[0], 0.25f + (7.0f / 3.0f + 1.0f));
  AccumulateSampleMeans(sums, &total, CpuStream());  // accumulates
  EXPECT_FLOAT_EQ(total.data<float>()[0], 0.25f + 2 * (7.0f / 3.0f + 1.0f));
}

TEST(SampleLossDeathTest, ShapesMustSplitIntoSamples) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor losses = Tensor::Zeros({9}, DType::kF32);
  Tensor sums = Tensor::Zeros({2, 2}, DType::kF32);
  EXPECT_DEATH(SampleLossSums(losses, Tensor::FromVectorI32(std::vector<int32_t>(9, 0), {9}), &sums,
                              CpuStream()),
               "9 token losses do not split into B=2 samples");
  Tensor sums3 = Tensor::Zeros({2, 3}, DType::kF32);
  EXPECT_DEATH(SampleLossSums(losses, Tensor::FromVectorI32(std::vector<int32_t>(9, 0), {9, 1}),
                              &sums3, CpuStream()),
               "targets must be");
}

}  // namespace
}  // namespace moefold::ops
