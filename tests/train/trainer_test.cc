// The step loop: deferred reweighting normalisation, micro-batch invariance, bit-exact uniform
// weights, anomaly skipping, and refusal of settings this build cannot run.
#include "core/train/trainer.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/testing/testing.h"
#include "tests/train/trainer_testing.h"

namespace moefold::train {
namespace {

// A smaller cousin of the quick-start model so each test takes a second or two.
config::ExperimentConfig SmallConfig(std::vector<std::string> overrides) {
  std::vector<std::string> all = {
      "model.hidden_size=32",       "model.num_layers=2",     "model.num_heads=4",
      "model.num_kv_heads=2",       "model.ffn_hidden_size=64", "model.moe.num_experts=4",
      "model.moe.top_k=2",          "model.moe.expert_ffn_hidden_size=32",
      "model.moe.first_dense_layers=1", "model.moe.layer_freq=1",
      "train.seq_len=16",           "train.global_batch_size=4", "train.micro_batch_size=4",
      "train.steps=4",              "optimizer.warmup_steps=1", "data.cache_dir=build/test-data"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return TinyMoeConfig(all);
}

std::vector<StepResult> RunSteps(Trainer& trainer, int steps) {
  std::vector<StepResult> results;
  for (int s = 0; s < steps; ++s) {
    auto r = trainer.Step(s);
    MF_CHECK(r.ok()) << r.status();
    results.push_back(*r);
  }
  return results;
}

TEST(TrainerTest, UniformWeightsReproduceThePlainMeanBitForBit) {
  for (const std::string strategy : {"none", "linupper"}) {
    // linupper with warm-up covering every step and warmup_temperature 0 is uniform too.
    auto trainer = MakeQuietTrainer(
        SmallConfig({"reweighting.strategy=" + strategy, "reweighting.warmup_steps=10",
                     "reweighting.warmup_temperature=0"}));
    for (const StepResult& r : RunSteps(*trainer, 3)) {
      EXPECT_EQ(r.weighted_lm_loss, r.lm_loss) << strategy << " step " << r.step;
      EXPECT_EQ(r.normaliser, 4.0);
    }
  }
}

TEST(TrainerTest, ReweightingChangesWeightsAfterTheFirstStep) {
  auto trainer =
      MakeQuietTrainer(SmallConfig({"reweighting.strategy=linupper", "reweighting.temperature=0.2",
                                    "reweighting.warmup_steps=0"}));
  const auto results = RunSteps(*trainer, 3);
  EXPECT_EQ(results[0].max_weight_ratio, 1.0);  // no previous range: uniform
  EXPECT_GT(results[2].max_weight_ratio, 1.01);
  EXPECT_LE(results[2].max_weight_ratio, std::exp(1.0 / 0.2) * 1.0001);
  EXPECT_NE(results[2].weighted_lm_loss, results[2].lm_loss);
}

void ExpectSameTraining(const config::ExperimentConfig& a_config,
                        const config::ExperimentConfig& b_config, int steps) {
  auto a = MakeQuietTrainer(a_config);
  auto b = MakeQuietTrainer(b_config);
  const auto ra = RunSteps(*a, steps);
  const auto rb = RunSteps(*b, steps);
  for (int s = 0; s < steps; ++s) {
    EXPECT_NEAR(ra[s].loss, rb[s].loss, 1e-5 * std::fabs(ra[s].loss)) << "step " << s;
    EXPECT_NEAR(ra[s].grad_norm, rb[s].grad_norm, 1e-4 * ra[s].grad_norm) << "step " << s;
  }
  const auto& pa = a->params().params();
  const auto& pb = b->params().params();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TENSOR_NEAR(pb[i]->value, pa[i]->value, 1e-4, 1e-6) << pa[i]->name;
  }
}

TEST(TrainerTest, MicroBatchSizeDoesNotChangeReweightedTraining) {
  const std::vector<std::string> common = {"reweighting.strategy=linupper",
                                           "reweighting.temperature=0.5",
                                           "reweighting.warmup_steps=0",
                                           "model.moe.aux_loss_type=seq",
                                           "model.moe.z_loss_coeff=0.001"};
  auto one = common, four = common;
  one.push_back("train.micro_batch_size=1");
  four.push_back("train.micro_batch_size=4");
  ExpectSameTraining(SmallConfig(one), SmallConfig(four), 4);
}

TEST(TrainerTest, BatchLevelAuxLossDependsOnMicroBatchSizeByDefinition) {
  auto one =
      MakeQuietTrainer(SmallConfig({"model.moe.aux_loss_type=batch", "train.micro_batch_size=1"}));
  auto four =
      MakeQuietTrainer(SmallConfig({"model.moe.aux_loss_type=batch", "train.micro_batch_size=4"}));
  const double a = RunSteps(*one, 1)[0].aux_loss, b = RunSteps(*four, 1)[0].aux_loss;
  EXPECT_GT(a, 0);
  EXPECT_GT(std::fabs(a - b), 1e-6 * a);  // per micro-batch balance differs from global balance
}

TEST(TrainerTest, LossFallsOnTheBuiltinCorpus) {
  auto trainer = MakeQuietTrainer(SmallConfig({"train.steps=30", "optimizer.lr=0.01"}));
  const auto results = RunSteps(*trainer, 30);
  EXPECT_GT(results.front().lm_loss, 5.0);  // ≈ ln 257 at initialisation
  EXPECT_LT(results.back().lm_loss, results.front().lm_loss - 1.5);
  for (const auto& r : results) EXPECT_FALSE(r.skipped);
}

TEST(TrainerTest, ForcedBalancedRoutingLoadsEveryExpertEqually) {
  // 4 sequences × 16 tokens × top-2 = 128 pairs over 4 experts: 32 each, imbalance exactly 1.
  auto forced = MakeQuietTrainer(SmallConfig({"model.moe.force_balanced_routing=true"}));
  auto real = MakeQuietTrainer(SmallConfig({}));
  for (int s = 0; s < 3; ++s) {
    auto f = forced->Step(s);
    auto r = real->Step(s);
    ASSERT_TRUE(f.ok() && r.ok()) << f.status() << r.status();
    ASSERT_EQ(f->expert_tokens.size(), 1u);  // one MoE layer
    EXPECT_EQ(f->expert_tokens[0], (std::vector<int64_t>{32, 32, 32, 32})) << "step " << s;
    EXPECT_EQ(f->expert_imbalance[0], 1.0);
    EXPECT_TRUE(std::isfinite(f->loss));
    EXPECT_NE(f->lm_loss, r->lm_loss);  // the routing really changed
  }
}

// logging.profile_steps times exactly those steps per op family: the families and the unattributed
// rest add up to the step, the model's op families all appear, and the run writes profile.jsonl
// and a table after its summary.
TEST(TrainerTest, ProfiledStepsAreTimedPerOpFamily) {
  const std::string run_dir = "build/test-runs/profile";
  std::filesystem::remove_all(run_dir);
  config::ExperimentConfig config = SmallConfig({"logging.profile_steps=1,3"});
  TrainerOptions options;
  options.run_dir = run_dir;
  options.print_progress = false;
  auto trainer = Trainer::Create(config, options);
  ASSERT_OK(trainer);
  for (int s = 0; s < 4; ++s) {
    auto r = (*trainer)->Step(s);
    ASSERT_OK(r);
    EXPECT_EQ(r->profile.has_value(), s == 1 || s == 3) << "step " << s;
    if (!r->profile) continue;
    double sum = r->profile->unattributed_ms;
    for (double ms : r->profile->family_ms) sum += ms;
    EXPECT_NEAR(sum, r->profile->step_ms, 1e-6 * r->profile->step_ms);
    for (OpFamily f : {OpFamily::kAttention, OpFamily::kGemm, OpFamily::kExpertGemm,
                       OpFamily::kRouter, OpFamily::kPermute, OpFamily::kNorm,
                       OpFamily::kActivation, OpFamily::kLoss, OpFamily::kOptimizer}) {
      EXPECT_GT(r->profile->calls[static_cast<int>(f)], 0) << OpFamilyName(f);
    }
    // Attention is timed in both layers of the small model.
    EXPECT_GT(r->profile->family_layer_ms.count({static_cast<int>(OpFamily::kAttention), 1}), 0u);
  }

  TrainerOptions write;
  write.run_dir = run_dir;
  write.print_progress = false;
  auto writer = Trainer::Create(SmallConfig({"logging.profile_steps=2"}), write);
  ASSERT_OK(writer);
  auto summary = (*writer)->Run();
  ASSERT_OK(summary);
  EXPECT_EQ(summary->profiled_steps, 1);
  EXPECT_NE(FormatSummary(*summary).find("expert_gemm"), std::string::npos);
  std::ifstream file(run_dir + "/profile.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(file, line));
  EXPECT_EQ(line.rfind("{\"step\": 2, \"step_ms\": ", 0), 0u) << line;
  EXPECT_FALSE(std::getline(file, line));
}

TEST(TrainerTest, NonFiniteStepIsSkipped) {
  auto config = SmallConfig({});
  auto trainer = MakeQuietTrainer(config);
  // Poison one weight: the loss turns NaN, the step must be skipped and the weights left alone.
  Parameter* head = trainer->params().Find("lm_head.weight");
  head->value.data<float>()[0] = NAN;
  const std::vector<float> before = trainer->params().Find("model.norm.weight")->value.ToVector();
  auto r = trainer->Step(0);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->skipped);
  EXPECT_EQ(trainer->params().Find("model.norm.weight")->value.ToVector(), before);
}

TEST(TrainerTest, TokensOutsideTheVocabularyAreRefused) {
  // The byte corpus holds ids up to 256; a 200-token vocabulary cannot embed them.
  auto config = SmallConfig({});
  config.mutable_model()->set_vocab_size(200);
  TrainerOptions options;
  options.write_metrics = false;
  auto trainer = Trainer::Create(config, options);
  ASSERT_FALSE(trainer.ok());
  EXPECT_NE(trainer.status().message().find("kjv_byte"), absl::string_view::npos)
      << trainer.status();
}

}  // namespace
}  // namespace moefold::train
