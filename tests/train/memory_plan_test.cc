// The per-rank memory estimate of `moefold plan`: one rank holds every parameter; pipeline stages
// hold disjoint parts that add up to the model; ZeRO-1 divides the optimizer state by the shard
// groups; tensor parallelism shards what it splits; the schedule sets the micro-batches in flight
// and the bubble.
#include "core/train/memory_plan.h"

#include "configs/config_loader.h"
#include "core/train/flops.h"
#include "core/train/model_from_config.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::train {
namespace {

config::ExperimentConfig Config(std::vector<std::string> overrides) {
  auto c = config::LoadConfigFile("configs/tiny_moe.yaml", overrides);
  MF_CHECK(c.ok()) << c.status();
  return *c;
}

MemoryEstimate Estimate(const config::ExperimentConfig& c, int world, int rank) {
  const auto& p = c.parallel();
  auto mapping = parallel::Mapping::Create(
      world, {.tp = p.tp(), .cp = p.cp(), .dp = p.dp(), .pp = p.pp(), .etp = p.etp(),
              .ep = p.ep(), .order = p.order()});
  MF_CHECK(mapping.ok()) << mapping.status();
  auto m = EstimateMemory(c, *mapping, rank);
  MF_CHECK(m.ok()) << m.status();
  return *m;
}

TEST(MemoryPlanTest, OneRankHoldsTheWholeModel) {
  const auto c = Config({});
  const MemoryEstimate m = Estimate(c, 1, 0);
  EXPECT_EQ(m.parameters, CountParameters(*ModelSpecFromConfig(c)).total);
  EXPECT_EQ(m.parameter_bytes, 4 * m.parameters);
  EXPECT_EQ(m.optimizer_bytes, 8 * m.parameters);
  EXPECT_GT(m.activation_bytes, 0);
  EXPECT_EQ(m.bubble_fraction, 0);
  EXPECT_NE(FormatMemoryEstimate(m).find("pipeline bubble fraction: 0.000"), std::string::npos);
}

TEST(MemoryPlanTest, StagesSplitTheModelAndTheScheduleSetsInFlight) {
  const auto c = Config({"parallel.pp=4", "train.global_batch_size=8", "train.micro_batch_size=1"});
  const int64_t total = CountParameters(*ModelSpecFromConfig(c)).total;
  int64_t sum = 0;
  for (int stage = 0; stage < 4; ++stage) {
    const MemoryEstimate m = Estimate(c, 4, stage);
    EXPECT_EQ(m.stage, stage);
    EXPECT_EQ(m.in_flight, 4 - stage) << "1F1B keeps pp − stage micro-batches";
    EXPECT_DOUBLE_EQ(m.bubble_fraction, 3.0 / 11.0);  // (pp − 1) / (m + pp − 1), m = 8
    sum += m.parameters;
  }
  EXPECT_EQ(sum, total);
  auto afab = Config({"parallel.pp=4", "parallel.schedule=afab", "train.global_batch_size=8",
                      "train.micro_batch_size=1"});
  EXPECT_EQ(Estimate(afab, 4, 0).in_flight, 8);
}

TEST(MemoryPlanTest, ZeroOneDividesTheOptimizerAndTpShards) {
  const auto plain = Config({});
  const MemoryEstimate one = Estimate(plain, 1, 0);
  const MemoryEstimate dp4 = Estimate(Config({"parallel.zero1=true"}), 4, 0);
  EXPECT_EQ(dp4.parameters, one.parameters);
  EXPECT_LE(dp4.optimizer_bytes, one.optimizer_bytes / 4 + 8 * 3);  // three ceil-divided groups
  EXPECT_GE(dp4.optimizer_bytes, one.optimizer_bytes / 4);
  const MemoryEstimate tp2 =
      Estimate(Config({"parallel.tp=2", "parallel.sequence_parallel=true"}), 2, 0);
  EXPECT_LT(tp2.parameters, one.parameters);
  EXPECT_LT(tp2.activation_bytes, one.activation_bytes);
  const MemoryEstimate ep2 = Estimate(Config({"parallel.ep=2"}), 2, 0);
  EXPECT_LT(ep2.parameters, one.parameters);  // half the experts
}

}  // namespace
}  // namespace moefold::train
