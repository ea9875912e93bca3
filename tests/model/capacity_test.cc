// Capacity mode: C = ceil(T·k/E · factor); each expert keeps its C highest-weight pairs (ties: the
// earlier pair) or its C earliest pairs (ops::ComputeCapacityPermutation); the dropped count is
// Σ_e max(0, pairs_e − C) whatever the policy; a capacity nothing reaches keeps
// ComputePermutation's order exactly; the MoE layer reports the drops and pads to C.
#include "core/model/capacity.h"

#include <algorithm>
#include <vector>

#include "core/model/moe_layer.h"
#include "gtest/gtest.h"
#include "ops/moe.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

TEST(CapacityTest, CapacityIsTheCeilingOfTheFairShareTimesTheFactor) {
  EXPECT_EQ(ExpertCapacity(10, 2, 4, 1.0f), 5);   // 10·2/4 = 5
  EXPECT_EQ(ExpertCapacity(10, 2, 4, 1.1f), 6);   // ceil(5.5)
  EXPECT_EQ(ExpertCapacity(3, 1, 8, 0.5f), 1);    // at least one
  EXPECT_EQ(ExpertCapacity(0, 2, 4, 1.0f), 0);
}

// The rule written out by brute force: per expert, rank pairs (by weight descending then pair
// index, or by pair index), keep the first C, list the kept ones expert-major in pair order.
std::vector<int32_t> BruteForce(const std::vector<int32_t>& ids, const std::vector<float>& w,
                                int experts, int64_t c, DropPolicy policy) {
  std::vector<int32_t> kept;
  for (int e = 0; e < experts; ++e) {
    std::vector<int32_t> mine;
    for (int32_t p = 0; p < static_cast<int32_t>(ids.size()); ++p) {
      if (ids[p] == e) mine.push_back(p);
    }
    if (policy == DropPolicy::kProbs) {
      std::sort(mine.begin(), mine.end(), [&](int32_t a, int32_t b) {
        return w[a] != w[b] ? w[a] > w[b] : a < b;
      });
    }
    if (static_cast<int64_t>(mine.size()) > c) mine.resize(c);
    std::sort(mine.begin(), mine.end());
    kept.insert(kept.end(), mine.begin(), mine.end());
  }
  return kept;
}

struct Kept {
  Tensor sorted, counts, demand;
  int64_t dropped;
};

// ops::ComputeCapacityPermutation on the CPU, with counts and demand as views of one tensor (as
// the MoE layer passes them).
Kept Capacity(const Tensor& ids, const Tensor& weights, int experts, int64_t c, DropPolicy policy) {
  Tensor sorted = Tensor::Zeros({ids.numel()}, DType::kI32);
  Tensor both = Tensor::Zeros({2 * experts}, DType::kI32);
  Tensor counts = both.Slice(0, experts), demand = both.Slice(experts, 2 * experts);
  ops::ComputeCapacityPermutation(ids, weights, experts, c, policy, &sorted, &counts, &demand,
                                  CpuStream());
  int64_t kept = 0;
  for (int e = 0; e < experts; ++e) kept += counts.data<int32_t>()[e];
  for (int64_t i = kept; i < sorted.numel(); ++i) {
    EXPECT_EQ(sorted.data<int32_t>()[i], -1) << "entry " << i << " past the kept pairs";
  }
  return {sorted.Slice(0, kept), counts, demand, ids.numel() - kept};
}

TEST(CapacityTest, KeepsWhatTheDocumentedRuleKeeps) {
  const int64_t t = 12, k = 2;
  const int experts = 4;
  Tensor ids = testing::RandomInts({t, k}, 1, 2);  // experts 0 and 1 only: crowded
  for (int64_t i = 0; i < t; ++i) ids.data<int32_t>()[i * k + 1] += 2;  // second choice 2 or 3
  Tensor weights = testing::RandomNormal({t, k}, 2);
  weights.data<float>()[3] = weights.data<float>()[7];  // a tie somewhere
  const std::vector<int32_t> id_list(ids.data<int32_t>(), ids.data<int32_t>() + t * k);
  const std::vector<float> w_list(weights.data<float>(), weights.data<float>() + t * k);
  std::vector<int64_t> per_expert(experts, 0);
  for (int32_t e : id_list) ++per_expert[e];
  for (int64_t c : {1, 2, 3, 5}) {
    int64_t expected_drops = 0;
    for (int64_t n : per_expert) expected_drops += std::max<int64_t>(0, n - c);
    for (DropPolicy policy : {DropPolicy::kProbs, DropPolicy::kPosition}) {
      const Kept kept = Capacity(ids, weights, experts, c, policy);
      EXPECT_EQ(kept.dropped, expected_drops) << "capacity " << c;
      const std::vector<int32_t> got(kept.sorted.data<int32_t>(),
                                     kept.sorted.data<int32_t>() + kept.sorted.numel());
      EXPECT_EQ(got, BruteForce(id_list, w_list, experts, c, policy)) << "capacity " << c;
      for (int e = 0; e < experts; ++e) {
        EXPECT_EQ(kept.counts.data<int32_t>()[e], std::min<int64_t>(per_expert[e], c));
        EXPECT_EQ(kept.demand.data<int32_t>()[e], per_expert[e]);
      }
    }
  }
  // Large enough: exactly the dropless permutation.
  Tensor dropless = Tensor::Empty({t * k}, DType::kI32),
         dropless_counts = Tensor::Empty({experts}, DType::kI32);
  ops::ComputePermutation(ids, experts, &dropless, &dropless_counts, CpuStream());
  for (DropPolicy policy : {DropPolicy::kProbs, DropPolicy::kPosition}) {
    const Kept all = Capacity(ids, weights, experts, t * k, policy);
    EXPECT_EQ(all.dropped, 0);
    EXPECT_EQ(all.sorted.ToVector(), dropless.ToVector());
    EXPECT_EQ(all.counts.ToVector(), dropless_counts.ToVector());
    EXPECT_EQ(all.demand.ToVector(), dropless_counts.ToVector());
  }
  // Capacity 0 keeps nothing; no pairs at all keep nothing either.
  const Kept none = Capacity(ids, weights, experts, 0, DropPolicy::kProbs);
  EXPECT_EQ(none.dropped, t * k);
  EXPECT_EQ(none.demand.ToVector(), dropless_counts.ToVector());
  const Tensor no_ids = Tensor::Empty({0, k}, DType::kI32);
  const Kept empty =
      Capacity(no_ids, Tensor::Empty({0, k}, DType::kF32), experts, 3, DropPolicy::kPosition);
  EXPECT_EQ(empty.sorted.numel(), 0);
  EXPECT_EQ(empty.counts.ToVector(), std::vector<float>(experts, 0.0f));
}

TEST(CapacityTest, ProbsKeepsTheHighestWeightsAndBreaksTiesByPairOrder) {
  // Expert 0 gets pairs 0, 2, 3, 5 (weights .1 .7 .7 .9); capacity 2 keeps .9 and the earlier .7
  // (pair 2), listed in pair order: 2, 5. Position keeps pairs 0 and 2. Expert 1 is under capacity.
  const Tensor ids = Tensor::FromVectorI32({0, 1, 0, 0, 1, 0}, {3, 2});
  const Tensor w = Tensor::FromVector({0.1f, 0.5f, 0.7f, 0.7f, 0.2f, 0.9f}, {3, 2});
  const Kept probs = Capacity(ids, w, 2, 2, DropPolicy::kProbs);
  EXPECT_EQ(probs.sorted.ToVector(), (std::vector<float>{2, 5, 1, 4}));
  const Kept position = Capacity(ids, w, 2, 2, DropPolicy::kPosition);
  EXPECT_EQ(position.sorted.ToVector(), (std::vector<float>{0, 2, 1, 4}));
  EXPECT_EQ(probs.counts.ToVector(), (std::vector<float>{2, 2}));
  EXPECT_EQ(probs.demand.ToVector(), (std::vector<float>{4, 2}));
  EXPECT_EQ(probs.dropped, 2);
}

TEST(CapacityTest, TheMoeLayerCountsItsDrops) {
  ModelSpec spec;
  spec.hidden = 8;
  spec.num_layers = 1;
  spec.init_std = 0.5f;
  spec.moe_layer = {true};
  spec.moe.num_experts = 4;
  spec.moe.top_k = 2;
  spec.moe.expert_ffn = 6;
  spec.moe.topk.k = 2;
  spec.moe.aux_type = AuxLossType::kNone;
  spec.moe.capacity_factor = 0.5f;  // C = ceil(16·2/4 · 0.5) = 4 of the fair 8
  for (bool pad : {false, true}) {
    spec.moe.pad_to_capacity = pad;
    ParameterSet params;
    MoeLayer layer(spec, {}, "m", &params);
    params.Initialize(2);
    MicroBatch batch;
    batch.tokens = Tensor::Zeros({2, 8}, DType::kI32);
    batch.targets = Tensor::Zeros({2, 8}, DType::kI32);
    batch.positions = Tensor::Zeros({8}, DType::kI32);
    const Tensor x = testing::RandomNormal({16, 8}, 3);
    StepContext ctx{&CpuStream()};
    ctx.ResetDeviceSums();
    MoeLayer::Saved saved;
    ForwardStats stats;
    Tensor y;
    ASSERT_OK(layer.Forward(ctx, batch, x, &saved, &y, &stats));
    int64_t expected = 0;
    for (int64_t n : layer.load()) expected += std::max<int64_t>(0, n - 4);
    EXPECT_GT(expected, 0);
    EXPECT_EQ(layer.dropped(), expected) << (pad ? "padded" : "unpadded");
    EXPECT_EQ(saved.plan.sorted.numel(), 32 - expected);
    if (pad) {
      EXPECT_EQ(saved.grouped.dim(0), 4 * 4);  // every expert's block is C rows
    }
  }
}

}  // namespace
}  // namespace moefold::model
