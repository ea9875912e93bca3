// The per-rank memory estimate of `moefold plan`: one rank holds every parameter; pipeline stages
// hold disjoint parts that add up to the model; ZeRO-1 divides the optimizer state by the shard
// groups; tensor parallelism shards what it splits; the schedule sets the micro-batches in flight
// and the bubble.
#include "core/train/memory_plan.h"

#include "absl/strings/str_cat.h"
#include "configs/config_loader.h"
#include "configs/validate.h"
#include "core/train/activation_memory.h"
#include "core/train/activation_setup.h"
#include "core/train/experiment_checks.h"
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

// Under SP the delayed and current FP8 recipes save each gathered projection input as 1-byte
// codes (core/model/fp8_gather.h): a dense layer's two gathered (T, H) inputs shrink from the
// activation element to one byte; blockwise keeps them in the activation dtype.
TEST(MemoryPlanTest, Fp8GathersSaveCodes) {
  const model::ModelSpec spec = *ModelSpecFromConfig(Config({}));
  ActivationLayout layout{.tp = 2, .sequence_parallel = true, .micro_batch = 2, .seq_len = 64,
                          .act_bytes = 2};
  const LayerActivations bf16 = LayerActivationBytes(spec, layout, /*moe_layer=*/false);
  layout.gathered_bytes = 1;
  const LayerActivations fp8 = LayerActivationBytes(spec, layout, false);
  const int64_t t = 2 * 64, h = spec.hidden;
  const int norm = static_cast<int>(model::SavedKind::kNormOutput);
  EXPECT_EQ(bf16.bytes[norm] - fp8.bytes[norm], 2 * t * h * (2 - 1));
  EXPECT_EQ(bf16.total() - fp8.total(), 2 * t * h);
  const std::vector<std::string> sp = {"parallel.tp=2", "parallel.sequence_parallel=true",
                                       "precision.compute_dtype=bf16"};
  auto estimate = [&](std::vector<std::string> more) {
    more.insert(more.begin(), sp.begin(), sp.end());
    return Estimate(Config(more), 2, 0).activation_bytes;
  };
  EXPECT_LT(estimate({"precision.fp8_recipe=delayed"}), estimate({}));
  EXPECT_EQ(estimate({"precision.fp8_recipe=current"}), estimate({"precision.fp8_recipe=delayed"}));
  EXPECT_EQ(estimate({"precision.fp8_recipe=delayed", "precision.fp8_gather=false"}), estimate({}));
}

// Where experts span ranks the FP8 dispatch saves the received rows as codes (and their scales).
TEST(MemoryPlanTest, Fp8DispatchSavesCodes) {
  const model::ModelSpec spec = *ModelSpecFromConfig(Config({}));
  ActivationLayout layout{.ep = 2, .micro_batch = 2, .seq_len = 64, .act_bytes = 2};
  const LayerActivations bf16 = LayerActivationBytes(spec, layout, /*moe_layer=*/true);
  layout.dispatched_bytes = 1.0 + 4.0 / spec.hidden;  // current: one f32 a row
  const LayerActivations fp8 = LayerActivationBytes(spec, layout, true);
  const int kind = static_cast<int>(model::SavedKind::kMoeDispatched);
  const int64_t rows = 2 * 64 * spec.moe.top_k;  // this rank's pairs, balanced over EP
  EXPECT_EQ(bf16.bytes[kind], rows * spec.hidden * 2);
  EXPECT_EQ(fp8.bytes[kind], rows * (spec.hidden + 4));
  // One rank: nothing travels, the rows stay in the activation dtype.
  layout.ep = 1;
  EXPECT_EQ(LayerActivationBytes(spec, layout, true).bytes[kind], rows * spec.hidden * 2);
}

// docs/FORMULAS.md §15: each policy of the activation store in the estimate, with the pipeline's
// micro-batches in flight multiplying what stays on the device.
TEST(MemoryPlanTest, EveryActivationPolicyIsAccounted) {
  const std::vector<std::string> layout = {"parallel.pp=2", "train.global_batch_size=8",
                                           "train.micro_batch_size=1"};
  auto with = [&](std::vector<std::string> policy) {
    policy.insert(policy.begin(), layout.begin(), layout.end());
    return Estimate(Config(policy), 2, 0);
  };
  const MemoryEstimate keep = with({});
  const MemoryEstimate selective =
      with({"memory.activation_policy=recompute", "memory.recompute=selective"});
  const MemoryEstimate full = with({"memory.activation_policy=recompute", "memory.recompute=full"});
  const MemoryEstimate swap_half =
      with({"memory.activation_policy=swap", "memory.swap_fraction=0.5"});
  const MemoryEstimate swap_all = with({"memory.activation_policy=swap", "memory.swap_fraction=1"});
  EXPECT_EQ(keep.in_flight, 2);
  EXPECT_EQ(keep.activation_policy, "keep");
  EXPECT_EQ(full.activation_policy, "recompute full");
  EXPECT_EQ(swap_half.activation_policy, "swap α=0.5");
  EXPECT_LT(selective.activation_bytes, keep.activation_bytes);
  EXPECT_LT(full.activation_bytes_per_micro, selective.activation_bytes_per_micro);
  EXPECT_EQ(keep.activation_host_bytes, 0);
  EXPECT_GT(swap_all.activation_host_bytes, 0);
  // α scales the host bytes of what is recomputed by rows, not the device's (the rest is
  // recomputed); what can only be recomputed whole (the attention core's outputs, the router, the
  // experts' rows) goes whole at any α > 0, and nothing goes at α = 0.
  const MemoryEstimate swap_none =
      with({"memory.activation_policy=swap", "memory.swap_fraction=0"});
  EXPECT_EQ(swap_none.activation_host_bytes, 0);
  EXPECT_GT(static_cast<double>(swap_half.activation_host_bytes),
            0.5 * static_cast<double>(swap_all.activation_host_bytes));
  EXPECT_LT(swap_half.activation_host_bytes, swap_all.activation_host_bytes);
  EXPECT_EQ(swap_half.activation_bytes_per_micro, swap_all.activation_bytes_per_micro);
  // The whole-swapped part is the same at any α > 0, and the rest scales with α; plan.json and
  // `moefold plan` carry it.
  EXPECT_GT(swap_half.activation_host_whole_bytes, 0);
  EXPECT_EQ(swap_half.activation_host_whole_bytes, swap_all.activation_host_whole_bytes);
  EXPECT_NEAR(static_cast<double>(swap_half.activation_host_bytes -
                                  swap_half.activation_host_whole_bytes),
              0.5 * static_cast<double>(swap_all.activation_host_bytes -
                                        swap_all.activation_host_whole_bytes),
              64.0);
  EXPECT_NE(MemoryEstimateJson(swap_half).Dump().find(absl::StrCat(
                "\"activation_host_whole_bytes\": ", swap_half.activation_host_whole_bytes)),
            std::string::npos);
  EXPECT_NE(FormatMemoryEstimate(swap_half).find("swapped whole"), std::string::npos);
  // In flight: 1F1B's first stage holds pp = 2 micro-batches of what stays on the device.
  EXPECT_EQ(keep.activation_bytes,
            keep.activation_bytes_per_micro * 2 + keep.activation_working_bytes);
}

TEST(MemoryPlanTest, MemoryBudgetSuggestsTheCheapestPolicyThatFits) {
  const auto c = Config({"train.micro_batch_size=4", "train.seq_len=512"});
  auto mapping = parallel::Mapping::Create(1, {});
  ASSERT_TRUE(mapping.ok());
  auto total = [&](const model::ActivationPolicy& p) {
    return EstimateMemory(c, *mapping, 0, p)->total_bytes;
  };
  // The ladder in order, each with its total; a budget gets the first rung that fits it.
  const std::vector<std::pair<std::string, int64_t>> ladder = {
      {"memory.activation_policy=keep", total(model::ActivationPolicy::Keep())},
      {"memory.activation_policy=recompute memory.recompute=selective",
       total(model::ActivationPolicy::Selective())},
      {"memory.activation_policy=swap memory.swap_fraction=1",
       total(model::ActivationPolicy::Swap(1.0f))},
      {"memory.activation_policy=recompute memory.recompute=full",
       total(model::ActivationPolicy::Full())}};
  EXPECT_LT(ladder[3].second, ladder[1].second);
  EXPECT_LT(ladder[1].second, ladder[0].second);
  auto suggest = [&](int64_t budget) { return SuggestActivationPolicy(c, *mapping, 0, budget); };
  for (const auto& [settings, budget] : ladder) {
    std::string expected;
    for (const auto& [rung, need] : ladder) {
      if (need <= budget) {
        expected = rung;
        break;
      }
    }
    auto got = suggest(budget);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->config, expected) << "budget " << budget;
    EXPECT_LE(got->estimate.total_bytes, budget);
  }
  EXPECT_EQ(suggest(ladder[0].second - 1)->config, ladder[1].first);
  const int64_t full = ladder[3].second;
  const auto none = suggest(full / 2);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(none.status().message()).find("no activation policy fits"),
            std::string::npos);
}

TEST(MemoryPlanTest, HostBudgetBelowWhatAlphaNeedsIsRefusedWithArithmetic) {
  auto mapping = parallel::Mapping::Create(1, {});
  ASSERT_TRUE(mapping.ok());
  const auto fits = Config({"memory.activation_policy=swap", "memory.swap_fraction=0.5",
                            "memory.host_budget_gb=1"});
  EXPECT_OK(CheckHostBudget(fits, *mapping, 0));
  const auto tight = Config({"memory.activation_policy=swap", "memory.swap_fraction=0.5",
                             "memory.host_budget_gb=0.0001"});
  const absl::Status s = CheckHostBudget(tight, *mapping, 0);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("memory.host_budget_gb = 0.0001 GiB is less than "
                                          "memory.swap_fraction α = 0.5 needs on rank 0: "),
            std::string::npos)
      << s.message();
}

// config::Validate refuses the budget once the train library's checks are registered, naming the
// stage over it: under 1F1B stage 0 holds pp micro-batches in flight, stage 1 one, but stage 1's
// layers are MoE layers, whose expert rows go to the host whole.
TEST(MemoryPlanTest, ValidateRefusesAHostBudgetBelowWhatAlphaNeedsOnTheBusiestStage) {
  RegisterExperimentChecks();
  const std::vector<std::string> swap = {"parallel.pp=2", "model.num_layers=4",
                                         "memory.activation_policy=swap",
                                         "memory.swap_fraction=0.5"};
  auto mapping = parallel::Mapping::Create(2, {.pp = 2});
  ASSERT_TRUE(mapping.ok());
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> all = swap;
    all.insert(all.end(), more.begin(), more.end());
    return Config(all);
  };
  const double stage0 =
      static_cast<double>(EstimateMemory(with({}), *mapping, 0)->activation_host_bytes);
  const double stage1 =
      static_cast<double>(EstimateMemory(with({}), *mapping, 1)->activation_host_bytes);
  ASSERT_NE(stage0, stage1);
  const int busiest = stage0 > stage1 ? 0 : 1;
  // Between the two stages' needs: the busier one is over, the other fits.
  const double between_gb = (stage0 + stage1) / 2 / 1073741824.0;
  const auto tight = with({absl::StrCat("memory.host_budget_gb=", between_gb)});
  const absl::Status s = config::Validate(tight, 2);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("- memory.host_budget_gb = "), std::string::npos)
      << s.message();
  EXPECT_NE(std::string(s.message())
                .find(absl::StrCat("memory.swap_fraction α = 0.5 needs on rank ", busiest, ": ")),
            std::string::npos)
      << s.message();
  EXPECT_OK(config::Validate(
      with({absl::StrCat("memory.host_budget_gb=", 2 * std::max(stage0, stage1) / 1073741824.0)}),
      2));
  EXPECT_OK(config::Validate(with({"memory.host_budget_gb=0"}), 2));  // 0: unbounded
  // A layout that does not divide is named, and the memory check (which needs one) stays silent.
  const absl::Status layout = config::Validate(tight, 3);
  EXPECT_EQ(std::string(layout.message()).find("memory.host_budget_gb"), std::string::npos)
      << layout.message();
}

// With host(α) = whole + α · split: α = min(1, (T_fwd · B − whole) / split per layer,
// (budget − whole) / split per rank), 0 when a whole part alone is over, rounded down to 1/64.
TEST(MemoryPlanTest, AutoSwapFractionHidesTheCopyAndFitsTheBudget) {
  // 100 MB a layer at 10 GB/s takes 10 ms: a 5 ms forward hides half of it.
  EXPECT_FLOAT_EQ(ChooseSwapFraction({100'000'000, 0}, 5e-3, 10e9, {}, 0), 0.5f);
  EXPECT_FLOAT_EQ(ChooseSwapFraction({100'000'000, 0}, 50e-3, 10e9, {}, 0), 1.0f);
  // The host budget of a quarter of what α = 1 needs.
  EXPECT_FLOAT_EQ(ChooseSwapFraction({100'000'000, 0}, 50e-3, 10e9, {4'000'000'000, 0},
                                     1'000'000'000),
                  0.25f);
  EXPECT_FLOAT_EQ(ChooseSwapFraction({100'000'000, 0}, 3e-3, 10e9, {}, 0), 0.296875f);  // 19/64
  // 20 MB swapped whole of a layer's 100 MB: 5 ms at 10 GB/s moves 50 MB, 30 MB of the 80 MB rows.
  EXPECT_FLOAT_EQ(ChooseSwapFraction({80'000'000, 20'000'000}, 5e-3, 10e9, {}, 0), 0.375f);
  // A budget of 1 GB against 0.5 GB whole + α · 2 GB: α = 0.25.
  EXPECT_FLOAT_EQ(ChooseSwapFraction({}, 0, 0, {2'000'000'000, 500'000'000}, 1'000'000'000),
                  0.25f);
  // The whole part alone is over the budget, or cannot hide: recompute everything.
  EXPECT_FLOAT_EQ(ChooseSwapFraction({}, 0, 0, {2'000'000'000, 1'500'000'000}, 1'000'000'000),
                  0.0f);
  EXPECT_FLOAT_EQ(ChooseSwapFraction({80'000'000, 60'000'000}, 5e-3, 10e9, {}, 0), 0.0f);
}

// swap_auto from measurements: the host link's bandwidth (a timed copy into the host arena) and
// the layer's compute rate (a timed GEMM of its largest projection's shape) are positive on the
// CPU, and the store gets an α in [0, 1] (logged with its inputs).
TEST(MemoryPlanTest, AutoSwapFractionComesFromMeasurements) {
  EXPECT_GT(MeasureGemmFlops(Device::Cpu(), DType::kF32, 65, 33, 47), 0.0);
  EXPECT_GT(MeasureGemmFlops(Device::Cpu(), DType::kBF16, 16, 32, 64), 0.0);
  EXPECT_GT(MeasureHostLinkBandwidth(Device::Cpu(), 1 << 20), 0.0);
  const auto config = Config({"memory.activation_policy=swap", "memory.swap_auto=true"});
  auto store = MakeActivationStore(config, nullptr, 0, Device::Cpu());
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_NE(*store, nullptr);
  const float alpha = (*store)->policy().swap_fraction;
  EXPECT_GE(alpha, 0.0f);
  EXPECT_LE(alpha, 1.0f);
}

// The config's kind names (configs/validate.cc) are the store's (SavedKindName).
TEST(MemoryPlanTest, ValidateKnowsEveryKindOfTheStore) {
  config::ExperimentConfig c = Config({});
  for (int k = 0; k < model::kNumSavedKinds; ++k) {
    const char* name = model::SavedKindName(static_cast<model::SavedKind>(k));
    (*c.mutable_memory()->mutable_tensor_policy())[name] = "keep";
    EXPECT_TRUE(model::ParseSavedKind(name).ok());
  }
  EXPECT_OK(config::Validate(c, 1));
  EXPECT_EQ(c.memory().tensor_policy().size(), model::kNumSavedKinds);
}

}  // namespace
}  // namespace moefold::train
