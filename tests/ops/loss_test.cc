// Tests of cross entropy: hand values, ignored targets, stability with huge logits, the range
// check, a finite-difference check of the backward with an ignored row; the same over vocabulary
// shards (partials by hand, merged partials against the full loss, the shard backward against the
// full one's columns and finite differences, bf16); and the per-sample sums and means.
#include "ops/loss.h"

#include <cmath>
#include <vector>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Columns;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomInts;
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

// A vocabulary of 13 split unevenly, with an empty shard; merged in the order kMergeOrder (the
// merge takes the shards in any order).
constexpr int64_t kVocab = 13;
constexpr int64_t kShardBounds[] = {0, 5, 9, 9, 13};
constexpr int kShards = 4;
constexpr int kMergeOrder[] = {2, 0, 3, 1};

Tensor ShardPartials(const Tensor& logits, const Tensor& targets, int shard) {
  const int64_t begin = kShardBounds[shard], end = kShardBounds[shard + 1];
  Tensor partials = RandomNormal({3, logits.dim(0)}, 40);  // overwritten
  CrossEntropyShardPartials(Columns(logits, begin, end), targets, begin, &partials, CpuStream());
  return partials;
}

// Every shard's partials (R, 3, N) in kMergeOrder, merged.
Losses MergedForward(const Tensor& logits, const Tensor& targets) {
  const int64_t n = logits.dim(0);
  Tensor all = Tensor::Empty({kShards, 3, n}, DType::kF32);
  for (int i = 0; i < kShards; ++i) {
    all.Slice(i, i + 1).CopyFrom(ShardPartials(logits, targets, kMergeOrder[i]).Reshape({1, 3, n}));
  }
  Losses l{RandomNormal({n}, 41), RandomNormal({n}, 42)};  // overwritten
  CrossEntropyFromShardPartials(all, targets, &l.token_losses, &l.lse, CpuStream());
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

TEST(CrossEntropyShardTest, PartialsByHand) {
  // Shard [3, 6) of a larger vocabulary. Row 0: target 4 is in it (local column 1); row 1: target
  // 0 is another shard's; row 2: ignored.
  const Tensor logits = Tensor::FromVector({0, 1, 2, 5, 5, 5, -1, 0, 3}, {3, 3});
  const Tensor targets = Tensor::FromVectorI32({4, 0, -1}, {3});
  Tensor partials = Tensor::Zeros({3, 3}, DType::kF32);
  CrossEntropyShardPartials(logits, targets, 3, &partials, CpuStream());
  const float s0 = static_cast<float>(std::exp(-2.0) + std::exp(-1.0) + 1.0);
  const float s2 = static_cast<float>(std::exp(-4.0) + std::exp(-3.0) + 1.0);
  EXPECT_TENSOR_NEAR(partials, Tensor::FromVector({2, 5, 3, s0, 3, s2, 1, 0, 0}, {3, 3}), 1e-6, 0);
  // A shard without columns: max −inf, nothing to sum, no target logit.
  Tensor empty = Tensor::Zeros({3, 3}, DType::kF32);
  CrossEntropyShardPartials(Tensor::Zeros({3, 0}, DType::kF32), targets, 6, &empty, CpuStream());
  for (int64_t n = 0; n < 3; ++n) {
    EXPECT_EQ(empty.data<float>()[n], -INFINITY);
    EXPECT_EQ(empty.data<float>()[3 + n], 0.0f);
    EXPECT_EQ(empty.data<float>()[6 + n], 0.0f);
  }
}

TEST(CrossEntropyShardTest, MergedPartialsEqualTheFullCrossEntropy) {
  const int64_t n = 7;
  // Scale 30: rows whose maximum sits in one shard and is far above the others'.
  for (const float scale : {1.0f, 30.0f}) {
    SCOPED_TRACE(scale);
    const Tensor logits = RandomNormal({n, kVocab}, 43, scale);
    Tensor targets = RandomInts({n}, 44, kVocab);
    targets.data<int32_t>()[2] = -1;
    const Losses full = Forward(logits, targets);
    const Losses merged = MergedForward(logits, targets);
    EXPECT_TENSOR_NEAR(merged.token_losses, full.token_losses, 1e-6, 1e-6);
    EXPECT_TENSOR_NEAR(merged.lse, full.lse, 1e-6, 1e-6);
    EXPECT_EQ(merged.token_losses.data<float>()[2], 0.0f);
  }
}

TEST(CrossEntropyShardTest, ShardBackwardIsTheFullBackwardsColumns) {
  const int64_t n = 6;
  const Tensor logits = RandomNormal({n, kVocab}, 45, 2.0f);
  Tensor targets = RandomInts({n}, 46, kVocab);
  targets.data<int32_t>()[4] = -1;
  const Tensor d_losses = RandomNormal({n}, 47);
  const Losses full = Forward(logits, targets);
  Tensor d_full = Tensor::Zeros(logits.shape(), DType::kF32);
  CrossEntropyBackward(logits, targets, full.lse, d_losses, &d_full, CpuStream());
  const Losses merged = MergedForward(logits, targets);
  for (int r = 0; r < kShards; ++r) {
    SCOPED_TRACE(r);
    const int64_t begin = kShardBounds[r], end = kShardBounds[r + 1];
    Tensor d_shard = RandomNormal({n, end - begin}, 48);  // overwritten
    CrossEntropyShardBackward(Columns(logits, begin, end), targets, begin, merged.lse, d_losses,
                              &d_shard, CpuStream());
    EXPECT_TENSOR_NEAR(d_shard, Columns(d_full, begin, end), 1e-6, 1e-7);
  }
}

// ∂/∂(one shard's logits) of Σ_n d_loss_n · loss_n, the losses merged from every shard's partials.
TEST(CrossEntropyShardTest, ShardBackwardMatchesFiniteDifferences) {
  const int64_t n = 4;
  Tensor logits = RandomNormal({n, kVocab}, 49, 2.0f);
  const Tensor targets = Tensor::FromVectorI32({3, -1, 7, 12}, {n});
  const Tensor d_losses = RandomNormal({n}, 50);
  const Losses merged = MergedForward(logits, targets);
  for (const int r : {0, 1, 3}) {
    SCOPED_TRACE(r);
    const int64_t begin = kShardBounds[r], end = kShardBounds[r + 1];
    Tensor shard = Columns(logits, begin, end);
    auto loss = [&] {
      Tensor whole = logits.Clone();
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = begin; j < end; ++j) {
          whole.data<float>()[i * kVocab + j] = shard.data<float>()[i * (end - begin) + j - begin];
        }
      }
      return Dot(MergedForward(whole, targets).token_losses, d_losses);
    };
    Tensor d_shard = Tensor::Zeros(shard.shape(), DType::kF32);
    CrossEntropyShardBackward(shard, targets, begin, merged.lse, d_losses, &d_shard, CpuStream());
    EXPECT_TRUE(GradientMatches(d_shard, loss, &shard));
  }
}

// bf16 logits: the partials are those of the f32 logits they widen to (the partials and the merge
// are f32), and the gradient is the f32 one rounded once.
TEST(CrossEntropyShardTest, Bf16IsTheRoundedF32) {
  const int64_t n = 5, begin = 5, end = 9;
  const Tensor logits = RandomNormal({n, end - begin}, 51, 3.0f).To(DType::kBF16);
  const Tensor wide = logits.To(DType::kF32);
  const Tensor targets = Tensor::FromVectorI32({6, 0, -1, 8, 12}, {n});
  Tensor partials = Tensor::Zeros({3, n}, DType::kF32);
  CrossEntropyShardPartials(logits, targets, begin, &partials, CpuStream());
  Tensor partials_f32 = Tensor::Zeros({3, n}, DType::kF32);
  CrossEntropyShardPartials(wide, targets, begin, &partials_f32, CpuStream());
  EXPECT_TENSOR_NEAR(partials, partials_f32, 0, 0);

  const Tensor lse = RandomNormal({n}, 52);
  const Tensor d_losses = RandomNormal({n}, 53);
  Tensor d_logits = Tensor::Empty(logits.shape(), DType::kBF16);
  CrossEntropyShardBackward(logits, targets, begin, lse, d_losses, &d_logits, CpuStream());
  Tensor d_f32 = Tensor::Empty(logits.shape(), DType::kF32);
  CrossEntropyShardBackward(wide, targets, begin, lse, d_losses, &d_f32, CpuStream());
  EXPECT_TENSOR_NEAR(d_logits.To(DType::kF32), d_f32.To(DType::kBF16).To(DType::kF32), 0, 0);
  // In place over the logits, as the head's backward may run it.
  Tensor in_place = logits.Clone();
  CrossEntropyShardBackward(in_place, targets, begin, lse, d_losses, &in_place, CpuStream());
  EXPECT_TENSOR_NEAR(in_place.To(DType::kF32), d_logits.To(DType::kF32), 0, 0);
}

TEST(CrossEntropyShardDeathTest, NegativeTargetNamesItsRow) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  Tensor partials = Tensor::Zeros({3, 2}, DType::kF32);
  EXPECT_DEATH(
      CrossEntropyShardPartials(Tensor::Zeros({2, 4}, DType::kF32),
                                Tensor::FromVectorI32({0, -2}, {2}), 0, &partials, CpuStream()),
      "target -2 at row 1 is negative");
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
