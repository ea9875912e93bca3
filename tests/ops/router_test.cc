// Tests of the router: the logits GEMM (hand values, bf16 rows, finite differences, equal to an
// f32 Linear on an f32 copy), top-k hand examples per score function (ties, bias, group-limited
// routing), finite-difference checks of RouterTopKBackward, softmax, aux loss and z-loss (all
// accumulate, the losses into a one-element tensor).
#include "ops/router.h"

#include <cmath>
#include <vector>

#include "ops/elementwise.h"
#include "ops/gemm.h"
#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

struct Routed {
  Tensor ids, weights;
};

Routed Route(const Tensor& logits, const TopKOptions& o, const Tensor& bias = Tensor()) {
  Routed r{Tensor::Zeros({logits.dim(0), o.k}, DType::kI32),
           Tensor::Zeros({logits.dim(0), o.k}, DType::kF32)};
  RouterTopKForward(logits, bias, o, &r.ids, &r.weights, CpuStream());
  return r;
}

std::vector<int32_t> Ids(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

TEST(RouterLogitsTest, HandValues) {
  const Tensor x = Tensor::FromVector({1, 2, 3, -1, 0, 2}, {2, 3});
  const Tensor w = Tensor::FromVector({1, 0, 0, 0.5f, 0.5f, 0.5f}, {2, 3});
  Tensor logits = Tensor::Zeros({2, 2}, DType::kF32);
  logits.Fill(9.0f);  // overwritten
  RouterLogitsForward(x, w, &logits, CpuStream());
  EXPECT_EQ(logits.ToVector(), (std::vector<float>{1, 3, -1, 0.5f}));
}

// The numbers of the previous router path: an f32 Linear on an f32 copy of the rows; the input
// gradient through an f32 product added into d_x (one rounding), the weight gradient accumulated.
TEST(RouterLogitsTest, SameBitsAsAnF32LinearOnAnF32Copy) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const Tensor x = RandomNormal({7, 24}, 30).To(dt);
    const Tensor w = RandomNormal({5, 24}, 31, 0.1f);
    const Tensor x_f32 = x.To(DType::kF32);
    Tensor logits = Tensor::Zeros({7, 5}, DType::kF32), expected = logits.Clone();
    RouterLogitsForward(x, w, &logits, CpuStream());
    LinearForward(x_f32, w, &expected, CpuStream());
    EXPECT_EQ(logits.ToVector(), expected.ToVector()) << DTypeName(dt);

    const Tensor d_logits = RandomNormal({7, 5}, 32);
    Tensor d_x = RandomNormal({7, 24}, 33).To(dt), d_w = RandomNormal({5, 24}, 34);
    Tensor d_x_ref = d_x.Clone(), d_w_ref = d_w.Clone();
    RouterLogitsBackward(x, w, d_logits, &d_x, &d_w, CpuStream());
    Tensor product = Tensor::Zeros({7, 24}, DType::kF32);
    LinearBackward(x_f32, w, d_logits, &product, &d_w_ref, CpuStream());
    Tensor sum = Tensor::Zeros({7, 24}, DType::kF32);
    Add(d_x_ref.To(DType::kF32), product, &sum, CpuStream());
    d_x_ref = sum.To(dt);
    EXPECT_EQ(d_x.ToVector(), d_x_ref.ToVector()) << DTypeName(dt);
    EXPECT_EQ(d_w.ToVector(), d_w_ref.ToVector()) << DTypeName(dt);
  }
}

TEST(RouterLogitsTest, BackwardAccumulatesAndMatchesFiniteDifferences) {
  Tensor x = RandomNormal({6, 10}, 35);
  Tensor w = RandomNormal({4, 10}, 36, 0.5f);
  const Tensor cot = RandomNormal({6, 4}, 37);
  Tensor logits = Tensor::Zeros({6, 4}, DType::kF32);
  auto loss = [&] {
    RouterLogitsForward(x, w, &logits, CpuStream());
    return Dot(logits, cot);
  };
  const Tensor d_x0 = RandomNormal(x.shape(), 38), d_w0 = RandomNormal(w.shape(), 39);
  Tensor d_x = d_x0.Clone(), d_w = d_w0.Clone();
  RouterLogitsBackward(x, w, cot, &d_x, &d_w, CpuStream());
  EXPECT_TRUE(GradientMatches(Delta(d_x, d_x0), loss, &x));
  EXPECT_TRUE(GradientMatches(Delta(d_w, d_w0), loss, &w));
  // Either output may be skipped.
  Tensor only_w = d_w0.Clone();
  RouterLogitsBackward(x, w, cot, nullptr, &only_w, CpuStream());
  EXPECT_EQ(only_w.ToVector(), d_w.ToVector());
}

TEST(RouterLogitsDeathTest, DTypesAreChecked) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor x = Tensor::Zeros({2, 4}, DType::kBF16);
  const Tensor w = Tensor::Zeros({3, 4}, DType::kF32);
  Tensor logits = Tensor::Zeros({2, 3}, DType::kF32);
  EXPECT_DEATH(RouterLogitsForward(x, w.To(DType::kBF16), &logits, CpuStream()), "w must be f32");
  Tensor d_x = Tensor::Zeros({2, 4}, DType::kF32);  // not x's dtype
  EXPECT_DEATH(RouterLogitsBackward(x, w, logits, &d_x, nullptr, CpuStream()), "d_x must be bf16");
}

TEST(RouterTopKTest, SoftmaxPostHandExampleWithTie) {
  // Row 0: experts 1 and 3 tie at 3 -> the lower id comes first. Row 1: top-2 are 2 (5) and 3 (2).
  const Tensor logits = Tensor::FromVector({1, 3, 2, 3, 0, -1, 5, 2}, {2, 4});
  const Routed r = Route(logits, {.k = 2});
  EXPECT_EQ(Ids(r.ids), (std::vector<int32_t>{1, 3, 2, 3}));
  const float w = 1.0f / (1.0f + std::exp(-3.0f));
  EXPECT_TENSOR_NEAR(r.weights, Tensor::FromVector({0.5f, 0.5f, w, 1 - w}, {2, 2}), 1e-6, 1e-7);
}

TEST(RouterTopKTest, SoftmaxPreHandExample) {
  // softmax = (1, 2, 3, 1)/7.
  const Tensor logits = Tensor::FromVector({0, std::log(2.0f), std::log(3.0f), 0}, {1, 4});
  TopKOptions o{.k = 2, .score = ScoreFunction::kSoftmaxPre};
  Routed r = Route(logits, o);
  EXPECT_EQ(Ids(r.ids), (std::vector<int32_t>{2, 1}));
  EXPECT_TENSOR_NEAR(r.weights, Tensor::FromVector({3 / 7.0f, 2 / 7.0f}, {1, 2}), 1e-6, 0);
  o.normalize = true;
  o.scaling_factor = 2.0f;
  r = Route(logits, o);
  EXPECT_TENSOR_NEAR(r.weights, Tensor::FromVector({1.2f, 0.8f}, {1, 2}), 1e-6, 0);
}

TEST(RouterTopKTest, SigmoidSelectsWithBiasButWeighsWithoutIt) {
  // s = (0.5, 0.5, 0.75, 0.25); s + bias = (0.5, 0.8, 0.75, 0.85) -> experts 3 then 1.
  const Tensor logits = Tensor::FromVector({0, 0, std::log(3.0f), -std::log(3.0f)}, {1, 4});
  const Tensor bias = Tensor::FromVector({0, 0.3f, 0, 0.6f}, {4});
  TopKOptions o{.k = 2, .score = ScoreFunction::kSigmoid};
  Routed r = Route(logits, o, bias);
  EXPECT_EQ(Ids(r.ids), (std::vector<int32_t>{3, 1}));
  EXPECT_TENSOR_NEAR(r.weights, Tensor::FromVector({0.25f, 0.5f}, {1, 2}), 1e-6, 0);
  o.normalize = true;
  r = Route(logits, o, bias);
  EXPECT_TENSOR_NEAR(r.weights, Tensor::FromVector({1 / 3.0f, 2 / 3.0f}, {1, 2}), 1e-6, 0);
  r = Route(logits, o);  // no bias: plain top-2 of s
  EXPECT_EQ(Ids(r.ids), (std::vector<int32_t>{2, 0}));
}

TEST(RouterTopKTest, GroupLimitedSoftmaxPost) {
  // 4 groups of 2, keep 2, k = 4 -> each group scored by the sum of its top-2 logits:
  // g0 = 5 - 9 = -4, g1 = 2.5, g2 = 8, g3 = -5.5 -> keep g2, g1 -> experts {2, 3, 4, 5}.
  const Tensor logits = Tensor::FromVector({5, -9, 1, 1.5f, 4, 4, 4.5f, -10}, {1, 8});
  TopKOptions o{.k = 4};
  EXPECT_EQ(Ids(Route(logits, o).ids), (std::vector<int32_t>{0, 6, 4, 5}));  // unconstrained
  o.num_groups = 4;
  o.group_topk = 2;
  EXPECT_EQ(Ids(Route(logits, o).ids), (std::vector<int32_t>{4, 5, 3, 2}));
}

TEST(RouterTopKTest, GroupLimitedSigmoidScoresGroupsWithBias) {
  // 2 groups of 2, keep 1, k = 2 -> group score = sum of both s + bias:
  // g0 = σ(2) + σ(-2) = 1, g1 = 2σ(1) + 0.01 ≈ 1.47 -> experts {2, 3}, 3 first by its bias.
  const Tensor logits = Tensor::FromVector({2, -2, 1, 1}, {1, 4});
  const Tensor bias = Tensor::FromVector({0, 0, 0, 0.01f}, {4});
  TopKOptions o{.k = 2, .score = ScoreFunction::kSigmoid, .normalize = true};
  EXPECT_EQ(Ids(Route(logits, o, bias).ids), (std::vector<int32_t>{0, 3}));  // unconstrained
  o.num_groups = 2;
  o.group_topk = 1;
  const Routed r = Route(logits, o, bias);
  EXPECT_EQ(Ids(r.ids), (std::vector<int32_t>{3, 2}));
  EXPECT_TENSOR_NEAR(r.weights, Tensor::FromVector({0.5f, 0.5f}, {1, 2}), 1e-6, 0);
}

// Logits with well-separated values (gaps ≥ 0.25) so ±eps never changes the selection.
Tensor SeparatedLogits(int64_t tokens, int64_t experts, uint64_t seed) {
  const Tensor noise = RandomNormal({tokens, experts}, seed, 0.03f);
  Tensor logits = Tensor::Zeros({tokens, experts}, DType::kF32);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t rank = (e * 5 + t * 3) % experts;  // 5 is coprime with the sizes used
      logits.data<float>()[t * experts + e] =
          0.35f * rank - 1.0f + noise.data<float>()[t * experts + e];
    }
  }
  return logits;
}

void CheckTopKBackward(const TopKOptions& o, uint64_t seed) {
  const int64_t tokens = 3, experts = 6;
  Tensor logits = SeparatedLogits(tokens, experts, seed);
  const Tensor cot = RandomNormal({tokens, o.k}, seed + 1);
  Routed r = Route(logits, o);
  auto loss = [&] {
    const Routed again = Route(logits, o);
    EXPECT_EQ(Ids(again.ids), Ids(r.ids)) << "selection changed under perturbation";
    return Dot(again.weights, cot);
  };
  const Tensor before = RandomNormal({tokens, experts}, seed + 2);
  Tensor d_logits = before.Clone();
  RouterTopKBackward(logits, r.ids, r.weights, o, cot, &d_logits, CpuStream());
  EXPECT_TRUE(GradientMatches(Delta(d_logits, before), loss, &logits, 1e-3));
}

TEST(RouterTopKBackwardTest, SoftmaxPost) {
  CheckTopKBackward({.k = 2, .scaling_factor = 1.5f}, 10);
}

TEST(RouterTopKBackwardTest, SoftmaxPre) {
  CheckTopKBackward({.k = 2, .score = ScoreFunction::kSoftmaxPre, .scaling_factor = 1.5f}, 20);
  CheckTopKBackward(
      {.k = 3, .score = ScoreFunction::kSoftmaxPre, .normalize = true, .scaling_factor = 1.5f}, 30);
}

TEST(RouterTopKBackwardTest, Sigmoid) {
  CheckTopKBackward({.k = 2, .score = ScoreFunction::kSigmoid, .scaling_factor = 1.5f}, 40);
  CheckTopKBackward(
      {.k = 2, .score = ScoreFunction::kSigmoid, .normalize = true, .scaling_factor = 2.5f}, 50);
}

TEST(RouterTopKBackwardTest, GroupLimitedSoftmaxPost) {
  CheckTopKBackward({.k = 2, .num_groups = 3, .group_topk = 2}, 60);
}

TEST(SoftmaxTest, HandValueAndBackward) {
  Tensor probs = Tensor::Zeros({1, 2}, DType::kF32);
  SoftmaxForward(Tensor::FromVector({0, std::log(3.0f)}, {1, 2}), &probs, CpuStream());
  EXPECT_TENSOR_NEAR(probs, Tensor::FromVector({0.25f, 0.75f}, {1, 2}), 1e-6, 0);

  Tensor logits = RandomNormal({3, 5}, 70);
  const Tensor cot = RandomNormal({3, 5}, 71);
  Tensor p = Tensor::Zeros({3, 5}, DType::kF32);
  auto loss = [&] {
    SoftmaxForward(logits, &p, CpuStream());
    return Dot(p, cot);
  };
  loss();
  const Tensor before = RandomNormal({3, 5}, 72);
  Tensor d_logits = before.Clone();
  SoftmaxBackward(p, cot, &d_logits, CpuStream());
  EXPECT_TRUE(GradientMatches(Delta(d_logits, before), loss, &logits));
}

// The losses' values alone: accumulated into a zero.
float AuxLoss(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k, float coeff) {
  Tensor sum = Tensor::Zeros({1}, DType::kF32);
  AuxLossForward(probs, counts, total_tokens, k, coeff, &sum, CpuStream());
  return sum.ToVector()[0];
}
float ZLoss(const Tensor& logits, float coeff, int64_t total_tokens) {
  Tensor sum = Tensor::Zeros({1}, DType::kF32);
  ZLossForward(logits, coeff, total_tokens, &sum, CpuStream());
  return sum.ToVector()[0];
}

TEST(AuxLossTest, HandValues) {
  // f = (3/4, 1/4), P = (0.375, 0.625): loss = 0.1 · 2 · (0.28125 + 0.15625) = 0.0875.
  const Tensor probs = Tensor::FromVector({0.25f, 0.75f, 0.5f, 0.5f}, {2, 2});
  const Tensor counts = Tensor::FromVector({3, 1}, {2});
  EXPECT_NEAR(AuxLoss(probs, counts, 2, 2, 0.1f), 0.0875, 1e-7);
  // Perfect balance gives exactly coeff.
  Tensor uniform = Tensor::Empty({8, 4}, DType::kF32);
  uniform.Fill(0.25f);
  Tensor even = Tensor::Empty({4}, DType::kF32);
  even.Fill(4.0f);
  EXPECT_NEAR(AuxLoss(uniform, even, 8, 2, 0.01f), 0.01, 1e-8);
}

TEST(AuxLossTest, LossesAccumulate) {
  const Tensor probs = Tensor::FromVector({0.25f, 0.75f, 0.5f, 0.5f}, {2, 2});
  const Tensor counts = Tensor::FromVector({3, 1}, {2});
  Tensor sum = Tensor::FromVector({0.5f}, {1});
  AuxLossForward(probs, counts, 2, 2, 0.1f, &sum, CpuStream());
  AuxLossForward(probs, counts, 2, 2, 0.1f, &sum, CpuStream());
  const float aux = AuxLoss(probs, counts, 2, 2, 0.1f);
  EXPECT_EQ(sum.ToVector()[0], (0.5f + aux) + aux);

  const Tensor logits = RandomNormal({3, 4}, 92, 2.0f);
  Tensor z_sum = Tensor::FromVector({-1.0f}, {1});
  ZLossForward(logits, 0.1f, 5, &z_sum, CpuStream());
  EXPECT_EQ(z_sum.ToVector()[0], -1.0f + ZLoss(logits, 0.1f, 5));
}

TEST(AuxLossTest, BackwardMatchesFiniteDifferencesThroughSoftmax) {
  // Local T = 3 of a population of 6 tokens (the rest live on other ranks), k = 2.
  Tensor logits = RandomNormal({3, 4}, 80);
  const Tensor counts = Tensor::FromVector({5, 2, 4, 1}, {4});
  const float d_loss = 1.7f;
  Tensor probs = Tensor::Zeros({3, 4}, DType::kF32);
  auto loss = [&] {
    SoftmaxForward(logits, &probs, CpuStream());
    return d_loss * AuxLoss(probs, counts, 6, 2, 1.0f);
  };
  loss();
  const Tensor before = RandomNormal({3, 4}, 81);
  Tensor d_logits = before.Clone();
  AuxLossBackward(probs, counts, 6, 2, 1.0f, d_loss, &d_logits, CpuStream());
  EXPECT_TRUE(GradientMatches(Delta(d_logits, before), loss, &logits));
}

TEST(ZLossTest, HandValueAndBackward) {
  // logsumexp(0, 0) = ln 2; z-loss = coeff · (ln 2)² / total_tokens.
  const Tensor zeros = Tensor::Zeros({1, 2}, DType::kF32);
  EXPECT_NEAR(ZLoss(zeros, 0.5f, 4), 0.5 * std::log(2.0) * std::log(2.0) / 4, 1e-7);

  Tensor logits = RandomNormal({3, 4}, 90, 2.0f);
  const float d_loss = 0.7f;
  auto loss = [&] { return d_loss * ZLoss(logits, 0.1f, 5); };
  const Tensor before = RandomNormal({3, 4}, 91);
  Tensor d_logits = before.Clone();
  ZLossBackward(logits, 0.1f, 5, d_loss, &d_logits, CpuStream());
  EXPECT_TRUE(GradientMatches(Delta(d_logits, before), loss, &logits));
}

TEST(BalancedRoutingTest, RoundRobinDistinctAndBalanced) {
  // Rows 5..10 of a population, k = 3 of E = 4: row g takes experts 3g, 3g+1, 3g+2 (mod 4).
  const int64_t rows = 6, k = 3, experts = 4;
  Tensor ids = Tensor::Zeros({rows, k}, DType::kI32);
  Tensor weights = Tensor::Zeros({rows, k}, DType::kF32);
  BalancedRouting(5, experts, &ids, &weights, CpuStream());
  EXPECT_EQ(Ids(ids), (std::vector<int32_t>{3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0}));
  for (float w : weights.ToVector()) EXPECT_FLOAT_EQ(w, 1.0f / 3);
  std::vector<int> per_expert(experts, 0);
  for (int32_t id : Ids(ids)) ++per_expert[id];
  EXPECT_EQ(per_expert, (std::vector<int>{5, 4, 4, 5}));  // pairs 15..32 over 4: differ by ≤ 1

  // 64 experts top-8 over 24 rows: every expert gets exactly 3 pairs and no row repeats one.
  Tensor many = Tensor::Zeros({24, 8}, DType::kI32);
  Tensor many_w = Tensor::Zeros({24, 8}, DType::kF32);
  BalancedRouting(0, 64, &many, &many_w, CpuStream());
  std::vector<int> counts(64, 0);
  const std::vector<int32_t> all = Ids(many);
  for (int64_t r = 0; r < 24; ++r) {
    std::vector<bool> seen(64, false);
    for (int64_t j = 0; j < 8; ++j) {
      const int32_t id = all[r * 8 + j];
      EXPECT_FALSE(seen[id]) << "row " << r << " repeats expert " << id;
      seen[id] = true;
      ++counts[id];
    }
  }
  EXPECT_EQ(counts, std::vector<int>(64, 3));
}

TEST(RouterDeathTest, BiasRequiresSigmoid) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor logits = Tensor::Zeros({1, 4}, DType::kF32);
  const Tensor bias = Tensor::Zeros({4}, DType::kF32);
  EXPECT_DEATH(Route(logits, {.k = 2}, bias), "expert_bias is only supported with the sigmoid");
}

}  // namespace
}  // namespace moefold::ops
