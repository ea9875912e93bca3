// Tests of loss-based sample reweighting: strategy scores, min–max normalisation, the uniform first
// step and warm-up, the e^{1/r} ratio bound, exact uniformity for strategy none, invariance of the
// normalised weights to how the global batch is split, the reference micro-batch softmax,
// checkpoint state, and parsing/validation messages.
#include "optim/reweighting.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "tests/testing/testing.h"

namespace moefold::optim {
namespace {

using ::testing::HasSubstr;

std::vector<float> RandomLosses(int n, uint64_t seed) {
  const std::vector<float> z = testing::RandomNormal({n}, seed).ToVector();
  std::vector<float> losses(n);
  for (int i = 0; i < n; ++i) losses[i] = 3.0f + 0.7f * z[i];
  return losses;
}

// Runs one step over `losses` on a fresh single-rank view and ends it, so the range is set.
void RunStep(SampleReweighter& r, int64_t step, const std::vector<float>& losses) {
  r.BeginStep(step);
  for (float l : losses) r.Weight(l);
  r.EndStep(r.LocalNormaliser(), r.LocalMin(), r.LocalMax());
}

TEST(ReweightingTest, StrategyScoresAtEndpoints) {
  struct Case {
    Strategy s;
    float at_minus1, at_0, at_1;
  };
  for (const Case& c : {Case{Strategy::kNone, 1, 1, 1}, Case{Strategy::kLinUpper, 0, 1, 1},
                        Case{Strategy::kUpper, 0, 0.5f, 1}, Case{Strategy::kQuadratic, 0, 1, 0},
                        Case{Strategy::kExtremes, 1, 0, 1}}) {
    EXPECT_FLOAT_EQ(StrategyScore(c.s, -1.0f), c.at_minus1) << StrategyName(c.s);
    EXPECT_FLOAT_EQ(StrategyScore(c.s, 0.0f), c.at_0) << StrategyName(c.s);
    EXPECT_FLOAT_EQ(StrategyScore(c.s, 1.0f), c.at_1) << StrategyName(c.s);
  }
  EXPECT_FLOAT_EQ(StrategyScore(Strategy::kLinUpper, -0.5f), 0.5f);
  EXPECT_FLOAT_EQ(StrategyScore(Strategy::kQuadratic, 0.5f), 0.75f);
}

TEST(ReweightingTest, MinMaxNormalisation) {
  EXPECT_FLOAT_EQ(NormalizeLoss(2.0f, 2.0f, 6.0f), -1.0f);
  EXPECT_FLOAT_EQ(NormalizeLoss(6.0f, 2.0f, 6.0f), 1.0f);
  EXPECT_FLOAT_EQ(NormalizeLoss(4.0f, 2.0f, 6.0f), 0.0f);
  EXPECT_FLOAT_EQ(NormalizeLoss(3.0f, 2.0f, 6.0f), -0.5f);
  EXPECT_FLOAT_EQ(NormalizeLoss(10.0f, 2.0f, 6.0f), 1.0f);  // outside the range: saturates
  EXPECT_FLOAT_EQ(NormalizeLoss(0.0f, 2.0f, 6.0f), -1.0f);
  // Degenerate range: denominator 1e-6, so equal losses map to 0 and anything else saturates.
  EXPECT_FLOAT_EQ(NormalizeLoss(3.0f, 3.0f, 3.0f), 0.0f);
  EXPECT_FLOAT_EQ(NormalizeLoss(3.5f, 3.0f, 3.0f), 1.0f);
  EXPECT_NEAR(NormalizeLoss(1.0f + 2.5e-7f, 1.0f, 1.0f + 5e-7f), 0.0f, 0.3f);  // ~1e-6 scale
  EXPECT_TRUE(std::isnan(NormalizeLoss(std::nanf(""), 2.0f, 6.0f)));
}

TEST(ReweightingTest, FirstStepIsUniformThenUsesPreviousRange) {
  SampleReweighter r({.strategy = Strategy::kLinUpper, .temperature = 0.5f});
  r.BeginStep(0);
  EXPECT_TRUE(r.StepIsUniform());
  for (float l : {1.0f, 2.0f, 3.0f}) EXPECT_EQ(r.Weight(l), 1.0f);
  EXPECT_EQ(r.LocalNormaliser(), 3.0);
  EXPECT_EQ(r.LocalMin(), 1.0f);
  EXPECT_EQ(r.LocalMax(), 3.0f);
  r.EndStep(3.0, 1.0f, 3.0f);
  EXPECT_EQ(r.GlobalNormaliser(), 3.0);

  r.BeginStep(1);
  EXPECT_FALSE(r.StepIsUniform());
  // Range (1, 3): h(1) = −1 → f = 0 → u = e^{−1/0.5}; h(2) = 0 → f = 1 → u = 1; h(1.5) = −0.5.
  EXPECT_FLOAT_EQ(r.Weight(1.0f), std::exp(-2.0f));
  EXPECT_EQ(r.Weight(2.0f), 1.0f);
  EXPECT_FLOAT_EQ(r.Weight(1.5f), std::exp(-1.0f));
  EXPECT_NEAR(r.LocalNormaliser(), 1.0 + std::exp(-2.0) + std::exp(-1.0), 1e-7);
  EXPECT_EQ(r.LocalCount(), 3);
}

TEST(ReweightingTest, WarmupUniformOrWarmupTemperature) {
  SampleReweighter uniform({.strategy = Strategy::kUpper, .temperature = 1.0f, .warmup_steps = 3});
  RunStep(uniform, 0, {1.0f, 5.0f});
  uniform.BeginStep(2);  // still warm-up, range known: uniform anyway
  EXPECT_TRUE(uniform.StepIsUniform());
  EXPECT_EQ(uniform.Weight(1.0f), 1.0f);
  EXPECT_EQ(uniform.Weight(5.0f), 1.0f);
  uniform.EndStep(2.0, 1.0f, 5.0f);
  uniform.BeginStep(3);  // warm-up over
  EXPECT_FALSE(uniform.StepIsUniform());
  EXPECT_FLOAT_EQ(uniform.Weight(1.0f), std::exp(-1.0f));  // upper: f(−1) = 0, r = 1

  SampleReweighter soft({.strategy = Strategy::kUpper,
                         .temperature = 1.0f,
                         .warmup_steps = 3,
                         .warmup_temperature = 100.0f});
  RunStep(soft, 0, {1.0f, 5.0f});
  soft.BeginStep(1);
  EXPECT_EQ(soft.StepTemperature(), 100.0f);
  EXPECT_FLOAT_EQ(soft.Weight(1.0f), std::exp(-0.01f));
  EXPECT_FLOAT_EQ(soft.Weight(3.0f), std::exp(-0.005f));
  EXPECT_EQ(soft.Weight(5.0f), 1.0f);
}

TEST(ReweightingTest, WeightRatioBoundedByExpOneOverR) {
  for (Strategy s :
       {Strategy::kLinUpper, Strategy::kUpper, Strategy::kQuadratic, Strategy::kExtremes}) {
    const float r_temp = 0.4f;
    SampleReweighter r({.strategy = s, .temperature = r_temp});
    RunStep(r, 0, RandomLosses(32, 1));
    r.BeginStep(1);
    std::vector<float> losses = RandomLosses(64, 2);
    losses.push_back(100.0f);  // far outside the previous range
    losses.push_back(-5.0f);
    std::vector<float> u;
    for (float l : losses) u.push_back(r.Weight(l));
    const float hi = *std::max_element(u.begin(), u.end());
    const float lo = *std::min_element(u.begin(), u.end());
    EXPECT_LE(hi, 1.0f) << StrategyName(s);
    EXPECT_LE(hi / lo, std::exp(1.0f / r_temp) * (1 + 1e-6f)) << StrategyName(s);
    EXPECT_GT(hi / lo, 2.0f) << StrategyName(s);  // the weights do differ
  }
}

TEST(ReweightingTest, NoneIsExactlyOneAndReproducesPlainMean) {
  SampleReweighter r({.strategy = Strategy::kNone});
  const std::vector<float> losses = RandomLosses(37, 3);
  for (int64_t step = 0; step < 3; ++step) {
    r.BeginStep(step);
    float weighted = 0.0f, plain = 0.0f;
    for (float l : losses) {
      const float u = r.Weight(l);
      ASSERT_EQ(u, 1.0f);
      weighted += u * l;
      plain += l;
    }
    EXPECT_EQ(r.LocalNormaliser(), 37.0);
    EXPECT_EQ(weighted / static_cast<float>(r.LocalNormaliser()),
              plain / static_cast<float>(losses.size()));
    r.EndStep(r.LocalNormaliser(), r.LocalMin(), r.LocalMax());
  }
}

// One rank's view of a step under a layout: the samples it holds, in its processing order.
struct RankRun {
  std::vector<int> sample_ids;
};

// Runs step 1 (after a step 0 that set the range) under a layout of ranks × micro-batches and
// returns each sample's normalised weight u/Z, Z reduced over ranks; also returns the next range.
std::vector<double> NormalisedWeights(const ReweightingOptions& options,
                                      const std::vector<float>& step0,
                                      const std::vector<float>& batch,
                                      const std::vector<RankRun>& ranks, int micro_batch,
                                      ReweightingState* next_state) {
  std::vector<SampleReweighter> reweighters;
  for (size_t i = 0; i < ranks.size(); ++i) {
    reweighters.emplace_back(options);
    RunStep(reweighters.back(), 0, step0);  // every rank saw the same reduced range
  }
  std::vector<float> u(batch.size(), -1.0f);
  double z = 0.0;
  float lo = INFINITY, hi = -INFINITY;
  for (size_t rank = 0; rank < ranks.size(); ++rank) {
    SampleReweighter& r = reweighters[rank];
    r.BeginStep(1);
    const std::vector<int>& ids = ranks[rank].sample_ids;
    for (size_t begin = 0; begin < ids.size(); begin += micro_batch) {  // one micro-batch
      for (size_t k = begin; k < std::min(ids.size(), begin + micro_batch); ++k) {
        u[ids[k]] = r.Weight(batch[ids[k]]);
      }
    }
    z += r.LocalNormaliser();  // the SUM / MIN / MAX all-reduces
    lo = std::min(lo, r.LocalMin());
    hi = std::max(hi, r.LocalMax());
  }
  for (SampleReweighter& r : reweighters) r.EndStep(z, lo, hi);
  *next_state = reweighters[0].state();
  std::vector<double> w(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) w[i] = u[i] / z;
  return w;
}

TEST(ReweightingTest, NormalisedWeightsAreLayoutInvariant) {
  const ReweightingOptions options{.strategy = Strategy::kLinUpper, .temperature = 0.4f};
  const std::vector<float> step0 = RandomLosses(16, 4);
  const std::vector<float> batch = RandomLosses(16, 5);

  // Layout A: one rank, micro-batches of 1, in order.
  RankRun all;
  for (int i = 0; i < 16; ++i) all.sample_ids.push_back(i);
  ReweightingState state_a, state_b;
  const std::vector<double> a = NormalisedWeights(options, step0, batch, {all}, 1, &state_a);

  // Layout B: two ranks, micro-batches of 4, samples in a scrambled order.
  RankRun r0, r1;
  for (int i : {13, 2, 7, 0, 9, 11, 4, 15}) r0.sample_ids.push_back(i);
  for (int i : {1, 14, 3, 8, 6, 12, 5, 10}) r1.sample_ids.push_back(i);
  const std::vector<double> b = NormalisedWeights(options, step0, batch, {r0, r1}, 4, &state_b);

  // Reference: softmax(f(h)/r) over the whole batch with the previous step's range.
  const float lo = *std::min_element(step0.begin(), step0.end());
  const float hi = *std::max_element(step0.begin(), step0.end());
  std::vector<double> ref(16);
  double z = 0.0;
  for (int i = 0; i < 16; ++i) {
    const double h = std::clamp((2.0 * batch[i] - (hi + lo)) / (hi - lo), -1.0, 1.0);
    ref[i] = std::exp(std::min(h + 1.0, 1.0) / 0.4);
    z += ref[i];
  }
  double sum_a = 0.0;
  for (int i = 0; i < 16; ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-7 * a[i]) << i;
    EXPECT_NEAR(a[i], ref[i] / z, 1e-6 * a[i]) << i;
    sum_a += a[i];
  }
  EXPECT_NEAR(sum_a, 1.0, 1e-12);
  EXPECT_EQ(state_a.range_min, state_b.range_min);
  EXPECT_EQ(state_a.range_max, state_b.range_max);
  EXPECT_EQ(state_a.range_min, *std::min_element(batch.begin(), batch.end()));
}

TEST(ReweightingTest, MicroBatchWeightsHandValues) {
  // linupper, r = 1, losses (1, 2, 3): h = (−1, 0, 1), f = (0, 1, 1) → (1, e, e)/(1 + 2e).
  const std::vector<float> w = MicroBatchWeights({1.0f, 2.0f, 3.0f}, 1.0f, Strategy::kLinUpper);
  const double e = std::exp(1.0);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_NEAR(w[0], 1.0 / (1 + 2 * e), 1e-7);
  EXPECT_NEAR(w[1], e / (1 + 2 * e), 1e-7);
  EXPECT_NEAR(w[2], e / (1 + 2 * e), 1e-7);
  // upper, r = 0.5, losses (0, 1, 2): f = (0, 0.5, 1) → (1, e, e²)/(1 + e + e²).
  const std::vector<float> u = MicroBatchWeights({2.0f, 0.0f, 1.0f}, 0.5f, Strategy::kUpper);
  const double zu = 1 + e + e * e;
  EXPECT_NEAR(u[0], e * e / zu, 1e-7);
  EXPECT_NEAR(u[1], 1 / zu, 1e-7);
  EXPECT_NEAR(u[2], e / zu, 1e-7);
  // Quadratic down-weights both ends equally; none is uniform; empty stays empty.
  const std::vector<float> q = MicroBatchWeights({1.0f, 2.0f, 3.0f}, 1.0f, Strategy::kQuadratic);
  EXPECT_NEAR(q[0], 1 / (2 + e), 1e-7);
  EXPECT_NEAR(q[1], e / (2 + e), 1e-7);
  EXPECT_EQ(MicroBatchWeights({5.0f, 1.0f}, 1.0f, Strategy::kNone), std::vector<float>(2, 0.5f));
  EXPECT_TRUE(MicroBatchWeights({}, 1.0f, Strategy::kExtremes).empty());
}

TEST(ReweightingTest, MicroBatchWeightsSumToOne) {
  for (Strategy s : {Strategy::kLinUpper, Strategy::kUpper, Strategy::kQuadratic,
                     Strategy::kExtremes, Strategy::kNone}) {
    const std::vector<float> w = MicroBatchWeights(RandomLosses(50, 6), 0.1f, s);
    EXPECT_NEAR(std::accumulate(w.begin(), w.end(), 0.0), 1.0, 1e-6) << StrategyName(s);
  }
}

TEST(ReweightingTest, MicroBatchWeightsForStepFollowsWarmup) {
  SampleReweighter r({.strategy = Strategy::kLinUpper,
                      .temperature = 1.0f,
                      .warmup_steps = 1,
                      .population = Population::kMicroBatch});
  const std::vector<float> losses = {1.0f, 2.0f, 3.0f};
  r.BeginStep(0);  // warm-up, warmup_temperature 0: uniform
  EXPECT_EQ(r.MicroBatchWeightsForStep(losses), std::vector<float>(3, 1.0f / 3.0f));
  r.EndStep(0.0, INFINITY, -INFINITY);  // no samples went through Weight(): range stays unset
  EXPECT_FALSE(r.state().has_range);
  r.BeginStep(1);  // no previous range needed for the micro-batch population
  EXPECT_EQ(r.MicroBatchWeightsForStep(losses),
            MicroBatchWeights(losses, 1.0f, Strategy::kLinUpper));
}

TEST(ReweightingTest, StateRoundTripsThroughCheckpoint) {
  const ReweightingOptions options{.strategy = Strategy::kExtremes, .temperature = 0.7f};
  SampleReweighter a(options);
  RunStep(a, 0, RandomLosses(8, 7));
  RunStep(a, 1, RandomLosses(8, 8));
  const ReweightingState saved = a.state();
  EXPECT_TRUE(saved.has_range);
  EXPECT_EQ(saved.last_step, 1);

  SampleReweighter b(options);
  b.set_state(saved);
  a.BeginStep(2);
  b.BeginStep(2);
  for (float l : RandomLosses(8, 9)) EXPECT_EQ(a.Weight(l), b.Weight(l));
  EXPECT_FALSE(b.StepIsUniform());
}

TEST(ReweightingTest, NonFiniteLossesDoNotEnterTheRange) {
  SampleReweighter r({.strategy = Strategy::kLinUpper, .temperature = 1.0f});
  r.BeginStep(0);
  r.Weight(2.0f);
  r.Weight(std::nanf(""));
  r.Weight(INFINITY);
  r.Weight(4.0f);
  EXPECT_EQ(r.LocalMin(), 2.0f);
  EXPECT_EQ(r.LocalMax(), 4.0f);
  r.EndStep(r.LocalNormaliser(), r.LocalMin(), r.LocalMax());
  r.BeginStep(1);
  EXPECT_TRUE(std::isnan(r.Weight(std::nanf(""))));  // the anomaly policy sees the NaN
}

TEST(ReweightingTest, ParseAndValidateNameTheProblem) {
  EXPECT_EQ(*ParseStrategy("linupper"), Strategy::kLinUpper);
  EXPECT_EQ(*ParseStrategy("extremes"), Strategy::kExtremes);
  EXPECT_EQ(*ParseStrategy("none"), Strategy::kNone);
  const absl::StatusOr<Strategy> bad = ParseStrategy("LinUpper2");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("\"LinUpper2\""));
  EXPECT_EQ(*ParsePopulation("microbatch"), Population::kMicroBatch);
  EXPECT_THAT(std::string(ParsePopulation("batch").status().message()), HasSubstr("\"batch\""));

  EXPECT_OK(ValidateReweighting({.strategy = Strategy::kNone, .temperature = 0.0f}));
  EXPECT_THAT(
      std::string(
          ValidateReweighting({.strategy = Strategy::kUpper, .temperature = 0.0f}).message()),
      HasSubstr("temperature"));
  EXPECT_THAT(
      std::string(
          ValidateReweighting({.strategy = Strategy::kUpper, .warmup_steps = -1}).message()),
      HasSubstr("warmup_steps"));
  EXPECT_THAT(
      std::string(ValidateReweighting({.strategy = Strategy::kUpper, .warmup_temperature = 0.001f})
                      .message()),
      HasSubstr("warmup_temperature"));
}

TEST(ReweightingDeathTest, CallsOutsideAStepAreBugs) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  SampleReweighter r({.strategy = Strategy::kUpper});
  EXPECT_DEATH(r.Weight(1.0f), "outside BeginStep/EndStep");
  EXPECT_DEATH(r.EndStep(0.0, 0.0f, 0.0f), "without BeginStep");
  r.BeginStep(0);
  EXPECT_DEATH(r.BeginStep(1), "before EndStep");
}

}  // namespace
}  // namespace moefold::optim
