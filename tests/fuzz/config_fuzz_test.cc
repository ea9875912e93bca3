// Fuzzes the experiment YAML and the --set overrides: mutated valid configs go through the parser,
// Validate and what a validated config feeds (the model spec, the stage split, the rank mapping);
// every input must end in a config or an error that says why — no crash, hang or sanitizer report.
#include <string>
#include <vector>

#include "configs/config_defaults.h"
#include "configs/config_loader.h"
#include "configs/validate.h"
#include "core/train/model_from_config.h"
#include "gtest/gtest.h"
#include "parallel/mapping.h"
#include "tests/fuzz/fuzz_testing.h"
#include "tests/fuzz/mutator.h"

namespace moefold::fuzz {
namespace {

// What the program does with a config after parsing it, for the world sizes it validates for
// (the first refusal is the result when none does).
absl::Status Consume(const config::ExperimentConfig& c) {
  absl::Status refused;
  for (int world : {1, 2, 8}) {
    absl::Status s = config::Validate(c, world);
    if (!s.ok()) {
      if (refused.ok()) refused = s;
      continue;
    }
    auto spec = train::ModelSpecFromConfig(c);
    if (!spec.ok()) return spec.status();
    auto stages = config::StageLayerCounts(c);
    if (!stages.ok()) return stages.status();
    const auto& p = c.parallel();
    auto mapping = parallel::Mapping::Create(
        world, {.tp = p.tp(), .cp = p.cp(), .dp = p.dp(), .pp = p.pp(), .etp = p.etp(),
                .ep = p.ep(), .order = p.order()});
    if (!mapping.ok()) return mapping.status();
    return absl::OkStatus();
  }
  return refused;
}

TEST(ConfigFuzzTest, MutatedYamlEndsInAConfigOrAClearError) {
  std::vector<std::string> seeds;
  for (const char* path : {"configs/tiny_moe.yaml", "configs/bench/mixtral_mini.yaml",
                           "configs/bench/finegrained_mini.yaml"}) {
    seeds.push_back(ReadFile(path));
    ASSERT_FALSE(seeds.back().empty()) << path;
  }
  seeds.push_back(config::ConfigToYaml(config::DefaultConfig()));
  Mutator mutator(/*seed=*/19);
  Tally tally;
  for (int i = 0; i < Iterations(); ++i) {
    const std::string yaml = mutator.Mutate(mutator.Pick(seeds));
    auto c = config::ParseConfigYaml(yaml, "fuzz.yaml");
    tally.Count(c.ok() ? Consume(*c) : c.status());
  }
  tally.Print("config yaml");
  EXPECT_EQ(tally.silent_errors, 0);
  EXPECT_GT(tally.refused, 0);
}

TEST(ConfigFuzzTest, MutatedOverridesEndInAConfigOrAClearError) {
  const std::vector<std::string> seeds = {
      "train.steps=10", "model.moe.top_k=4", "parallel.zero1=true", "train.device=cpu",
      "compression.rank_weights=0.5,0.25,0.25", "parallel.order=tp-cp-ep-dp-pp",
      "optimizer.lr=0.001", "model.hidden_size=64", "train.seed=18446744073709551615",
      "logging.trace_steps=2-3", "train.hang_timeout_s=5", "parallel.comm_timeout_s=30",
      "model.moe.capacity_factor=1.25", "reweighting.strategy=linupper", "checkpoint.dir=x"};
  const auto base = config::ParseConfigYaml(ReadFile("configs/tiny_moe.yaml"), "tiny_moe.yaml");
  ASSERT_TRUE(base.ok()) << base.status();
  Mutator mutator(/*seed=*/23);
  Tally tally;
  for (int i = 0; i < Iterations(); ++i) {
    config::ExperimentConfig c = *base;
    absl::Status s;
    for (uint64_t k = 1 + mutator.Below(3); k > 0 && s.ok(); --k) {
      s = config::ApplyOverride(&c, mutator.Mutate(mutator.Pick(seeds)));
    }
    tally.Count(s.ok() ? Consume(c) : s);
  }
  tally.Print("config --set");
  EXPECT_EQ(tally.silent_errors, 0);
  EXPECT_GT(tally.refused, 0);
}

}  // namespace
}  // namespace moefold::fuzz
