// Tests of MoE token permutation: a hand-sorted example, the Permute → Unpermute round trip,
// dropped pairs, finite-difference checks of both backwards (d_x, d_y, d_weights), and the
// per-unit expert counts.
#include "ops/moe.h"

#include <vector>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;

std::vector<int32_t> Ints(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

struct Permutation {
  Tensor sorted, counts;
};

Permutation Compute(const Tensor& ids, int num_experts) {
  Permutation p{Tensor::Zeros({ids.numel()}, DType::kI32),
                Tensor::Zeros({num_experts}, DType::kI32)};
  ComputePermutation(ids, num_experts, &p.sorted, &p.counts, CpuStream());
  return p;
}

TEST(PermutationTest, StableExpertMajorHandExample) {
  // Pairs (t·k + j -> expert): 0->1 1->0 2->0 3->2 4->1 5->0; expert 3 gets nothing.
  const Tensor ids = Tensor::FromVectorI32({1, 0, 0, 2, 1, 0}, {3, 2});
  const Permutation p = Compute(ids, 4);
  EXPECT_EQ(Ints(p.sorted), (std::vector<int32_t>{1, 2, 5, 0, 4, 3}));
  EXPECT_EQ(Ints(p.counts), (std::vector<int32_t>{3, 2, 1, 0}));

  const Tensor x = Tensor::FromVector({0, 0.5f, 10, 10.5f, 20, 20.5f}, {3, 2});
  Tensor out = Tensor::Zeros({6, 2}, DType::kF32);
  PermuteTokens(x, p.sorted, 2, &out, CpuStream());
  // Rows come from tokens sorted / k = 0, 1, 2, 0, 2, 1.
  EXPECT_TENSOR_NEAR(
      out,
      Tensor::FromVector({0, 0.5f, 10, 10.5f, 20, 20.5f, 0, 0.5f, 20, 20.5f, 10, 10.5f}, {6, 2}), 0,
      0);
}

TEST(PermutationTest, UnpermuteOfPermuteWithWeightsOneOverKIsIdentity) {
  const int64_t tokens = 7, hidden = 3, k = 3;
  const Tensor ids = RandomInts({tokens, k}, 1, 5);
  const Permutation p = Compute(ids, 5);
  const Tensor x = RandomNormal({tokens, hidden}, 2);
  Tensor permuted = Tensor::Zeros({tokens * k, hidden}, DType::kF32);
  PermuteTokens(x, p.sorted, k, &permuted, CpuStream());
  Tensor weights = Tensor::Empty({tokens, k}, DType::kF32);
  weights.Fill(1.0f / k);
  Tensor back = RandomNormal({tokens, hidden}, 3);  // overwritten
  UnpermuteTokens(permuted, p.sorted, weights, &back, CpuStream());
  EXPECT_TENSOR_NEAR(back, x, 1e-6, 1e-6);
}

TEST(PermutationTest, DroppedPairsContributeNothing) {
  // Only pairs 0 (token 0) and 3 (token 1) kept, k = 2: token 2 gets zeros.
  const Tensor sorted = Tensor::FromVectorI32({3, 0}, {2});
  const Tensor y = Tensor::FromVector({1, 2, 3, 4}, {2, 2});
  const Tensor weights = Tensor::FromVector({0.5f, 9, 9, 2, 9, 9}, {3, 2});
  Tensor out = RandomNormal({3, 2}, 4);
  UnpermuteTokens(y, sorted, weights, &out, CpuStream());
  EXPECT_TENSOR_NEAR(out, Tensor::FromVector({1.5f, 2, 2, 4, 0, 0}, {3, 2}), 0, 0);
}

TEST(PermutationTest, PermuteBackwardMatchesFiniteDifferences) {
  const int64_t tokens = 4, hidden = 3, k = 2;
  const Permutation p = Compute(RandomInts({tokens, k}, 5, 3), 3);
  Tensor x = RandomNormal({tokens, hidden}, 6);
  const Tensor cot = RandomNormal({tokens * k, hidden}, 7);
  Tensor out = Tensor::Zeros({tokens * k, hidden}, DType::kF32);
  auto loss = [&] {
    PermuteTokens(x, p.sorted, k, &out, CpuStream());
    return Dot(out, cot);
  };
  Tensor d_x = RandomNormal({tokens, hidden}, 8);  // overwritten
  PermuteTokensBackward(cot, p.sorted, k, &d_x, CpuStream());
  EXPECT_TRUE(GradientMatches(d_x, loss, &x));
}

TEST(PermutationTest, UnpermuteBackwardMatchesFiniteDifferences) {
  const int64_t tokens = 4, hidden = 3, k = 2;
  const Permutation p = Compute(RandomInts({tokens, k}, 9, 3), 3);
  Tensor y = RandomNormal({tokens * k, hidden}, 10);
  Tensor weights = RandomNormal({tokens, k}, 11);
  const Tensor cot = RandomNormal({tokens, hidden}, 12);
  Tensor out = Tensor::Zeros({tokens, hidden}, DType::kF32);
  auto loss = [&] {
    UnpermuteTokens(y, p.sorted, weights, &out, CpuStream());
    return Dot(out, cot);
  };
  Tensor d_y = RandomNormal(y.shape(), 13), d_weights = RandomNormal(weights.shape(), 14);
  UnpermuteTokensBackward(cot, y, p.sorted, weights, &d_y, &d_weights, CpuStream());
  EXPECT_TRUE(GradientMatches(d_y, loss, &y));
  EXPECT_TRUE(GradientMatches(d_weights, loss, &weights));
}

TEST(PermutationDeathTest, ExpertIdOutOfRange) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor ids = Tensor::FromVectorI32({0, 4}, {1, 2});
  Tensor sorted = Tensor::Zeros({2}, DType::kI32), counts = Tensor::Zeros({4}, DType::kI32);
  EXPECT_DEATH(ComputePermutation(ids, 4, &sorted, &counts, CpuStream()),
               "expert id 4 \\(token 0, choice 1\\) out of range");
}

TEST(CountExpertsPerUnitTest, HandExample) {
  // Local tokens 0..3 are global rows 3..6; units of 2 rows: tokens go to units 1, 2, 2, 3.
  const Tensor ids = Tensor::FromVectorI32({0, 1, 1, 1, 2, 0, 1, 2}, {4, 2});
  Tensor counts = RandomNormal({4, 3}, 1);  // overwritten, unit 0 included
  CountExpertsPerUnit(ids, /*first_row=*/3, /*unit_rows=*/2, &counts, CpuStream());
  EXPECT_TENSOR_NEAR(counts, Tensor::FromVector({0, 0, 0, 1, 1, 0, 1, 2, 1, 0, 1, 1}, {4, 3}), 0,
                     0);
}

TEST(CountExpertsPerUnitTest, OneUnitIsTheExpertHistogram) {
  const Tensor ids = RandomInts({50, 3}, 2, 7);
  Tensor counts = Tensor::Zeros({1, 7}, DType::kF32);
  CountExpertsPerUnit(ids, 0, 50, &counts, CpuStream());
  const Permutation p = Compute(ids, 7);
  for (int e = 0; e < 7; ++e) {
    EXPECT_EQ(counts.data<float>()[e], static_cast<float>(p.counts.data<int32_t>()[e])) << e;
  }
}

TEST(CountExpertsPerUnitDeathTest, RowsOutsideTheUnitsAndBadIds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor ids = Tensor::FromVectorI32({0, 1, 1, 1, 2, 0, 1, 2}, {4, 2});
  Tensor counts = Tensor::Zeros({3, 3}, DType::kF32);
  EXPECT_DEATH(CountExpertsPerUnit(ids, 3, 2, &counts, CpuStream()),
               "rows \\[3, 7\\) reach unit 3 but counts has U=3 units");
  EXPECT_DEATH(CountExpertsPerUnit(ids, -1, 2, &counts, CpuStream()), "first_row");
  const Tensor bad = Tensor::FromVectorI32({0, 1, 3, 1}, {2, 2});
  EXPECT_DEATH(CountExpertsPerUnit(bad, 0, 2, &counts, CpuStream()),
               "expert id 3 \\(token 1, choice 0\\) out of range \\[0, E=3\\)");
}

}  // namespace
}  // namespace moefold::ops
