// FP8 training on the CPU (every recipe emulated bit for bit in its casts, the FP8 GEMMs in f32):
// a smaller quick-start model (2 layers — dense and MoE — hidden 128, seq 64; the quick-start
// itself takes ~4 s a step in FP8 emulation on 2 cores, too long for CI) trains 150 steps with
// each recipe within 3% of the bf16 run's loss at every step after warm-up; a resumed delayed run
// continues bit for bit (its amax histories and scales are in the checkpoint); bad FP8 settings
// are refused by name; the fused FP8 producers train bit-identically to the unfused path.
#include <cmath>
#include <filesystem>

#include "configs/validate.h"
#include "core/model/fp8_linear.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/train/trainer_testing.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 150;
constexpr int kWarmup = 20;  // the LR warm-up; FP8's delayed scales settle within it

config::ExperimentConfig Fp8Config(std::vector<std::string> overrides) {
  std::vector<std::string> all = {"model.num_layers=2",
                                  "model.ffn_hidden_size=256",
                                  "model.moe.num_experts=4",
                                  "model.moe.expert_ffn_hidden_size=128",
                                  "train.seq_len=64",
                                  "train.global_batch_size=4",
                                  "train.micro_batch_size=2",
                                  "optimizer.warmup_steps=20",
                                  "precision.compute_dtype=bf16",
                                  "data.cache_dir=build/test-data"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  all.push_back("train.steps=" + std::to_string(kSteps));
  config::ExperimentConfig config = TinyMoeConfig(all, /*validate=*/false);
  MF_CHECK(config::Validate(config, 1).ok()) << config::Validate(config, 1);
  return config;
}

std::vector<double> Losses(const config::ExperimentConfig& config, int steps) {
  auto trainer = MakeQuietTrainer(config);
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    auto r = trainer->Step(s);
    MF_CHECK(r.ok()) << r.status();
    losses.push_back(r->lm_loss);
  }
  return losses;
}

const std::vector<double>& Bf16Losses() {
  static const std::vector<double>* losses = new std::vector<double>(Losses(Fp8Config({}), kSteps));
  return *losses;
}

class Fp8RecipeTraining : public ::testing::TestWithParam<const char*> {};

TEST_P(Fp8RecipeTraining, StaysWithinThreePercentOfBf16AfterWarmup) {
  const std::vector<double> fp8 =
      Losses(Fp8Config({std::string("precision.fp8_recipe=") + GetParam()}), kSteps);
  const std::vector<double>& bf16 = Bf16Losses();
  double largest = 0, sum = 0;
  for (int s = 0; s < kSteps; ++s) {
    ASSERT_TRUE(std::isfinite(fp8[s])) << "step " << s;
    const double rel = std::fabs(fp8[s] - bf16[s]) / bf16[s];
    if (s >= kWarmup) {
      EXPECT_LE(rel, 0.03) << "step " << s << ": bf16 " << bf16[s] << ", fp8 " << fp8[s];
      largest = std::max(largest, rel);
    }
    sum += rel;
  }
  // FP8 really ran: its rounding moves the losses off the bf16 ones.
  EXPECT_GT(sum, 1e-4);
  // It learnt: the loss fell well below the first step's.
  EXPECT_LT(fp8.back(), 0.75 * fp8.front());
  std::printf("%s: largest relative loss difference after warm-up %.4f, final %.4f vs bf16 %.4f\n",
              GetParam(), largest, fp8.back(), bf16.back());
}

INSTANTIATE_TEST_SUITE_P(Recipes, Fp8RecipeTraining,
                         ::testing::Values("delayed", "current", "blockwise"),
                         [](const auto& info) { return std::string(info.param); });

// The fused producers (RMSNorm → FP8 feeding qkv, the dense layer's add + RMSNorm → FP8 feeding
// gate_up, SwiGLU → FP8 feeding down_proj, its backward feeding gate_up's dgrad and wgrad, in the
// dense layer and the MoE layer's shared expert) change no bit: N steps with them
// on and off give the same losses, gradient norms and parameters, for the delayed recipe (the
// producer records the amax the separate cast would) and the blockwise one (tile scales).
class Fp8FusedProducers : public ::testing::TestWithParam<const char*> {};

TEST_P(Fp8FusedProducers, TrainBitIdenticallyToTheUnfusedPath) {
  constexpr int kFusedSteps = 6;
  struct Run {
    std::vector<double> losses, grad_norms;
    std::vector<std::vector<float>> params;
  };
  auto run = [](bool fused) {
    auto trainer = MakeQuietTrainer(Fp8Config(
        {std::string("precision.fp8_recipe=") + GetParam(), "precision.amax_history=2",
         "model.moe.num_shared_experts=1",
         std::string("precision.fp8_fused_producers=") + (fused ? "true" : "false")}));
    Run r;
    for (int s = 0; s < kFusedSteps; ++s) {
      auto step = trainer->Step(s);
      MF_CHECK(step.ok()) << step.status();
      r.losses.push_back(step->loss);
      r.grad_norms.push_back(step->grad_norm);
    }
    for (const auto& p : trainer->params().params()) r.params.push_back(p->value.ToVector());
    return r;
  };
  const Run fused = run(true), unfused = run(false);
  for (int s = 0; s < kFusedSteps; ++s) {
    EXPECT_EQ(fused.losses[s], unfused.losses[s]) << "step " << s;
    EXPECT_EQ(fused.grad_norms[s], unfused.grad_norms[s]) << "step " << s;
  }
  ASSERT_EQ(fused.params.size(), unfused.params.size());
  for (size_t i = 0; i < fused.params.size(); ++i) {
    EXPECT_EQ(fused.params[i], unfused.params[i]) << "parameter " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, Fp8FusedProducers, ::testing::Values("delayed", "blockwise"),
                         [](const auto& info) { return std::string(info.param); });

TEST(Fp8Training, DelayedResumeContinuesBitForBit) {
  namespace fs = std::filesystem;
  const std::string dir = "build/test-fp8-resume";
  fs::remove_all(dir);
  const std::vector<std::string> base = {"precision.fp8_recipe=delayed",
                                         "precision.amax_history=4"};
  std::vector<std::string> with_dir = base;
  with_dir.push_back("checkpoint.dir=" + dir);
  with_dir.push_back("checkpoint.every=0");
  with_dir.push_back("checkpoint.async=false");
  // The uninterrupted run.
  auto whole = MakeQuietTrainer(Fp8Config(base));
  std::vector<double> expected;
  for (int s = 0; s < 12; ++s) {
    auto r = whole->Step(s);
    ASSERT_TRUE(r.ok()) << r.status();
    expected.push_back(r->loss);
  }
  // 6 steps, a checkpoint, a new trainer resumed from it for the other 6.
  {
    auto first = MakeQuietTrainer(Fp8Config(with_dir));
    for (int s = 0; s < 6; ++s) ASSERT_TRUE(first->Step(s).ok());
    ASSERT_TRUE(first->BeginSave(6).ok());
    ASSERT_TRUE(first->FinishSave().ok());
  }
  auto second = MakeQuietTrainer(Fp8Config(with_dir));
  auto resumed = second->Resume();
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_EQ(*resumed, 6);
  for (int s = 6; s < 12; ++s) {
    auto r = second->Step(s);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->loss, expected[s]) << "step " << s;
  }
  fs::remove_all(dir);
}

TEST(Fp8Training, BadSettingsAreRefusedByName) {
  auto problems = [](std::vector<std::string> overrides) {
    std::vector<std::string> all = {"model.num_layers=2", "model.ffn_hidden_size=256",
                                    "model.moe.expert_ffn_hidden_size=128",
                                    "data.cache_dir=build/test-data"};
    all.insert(all.end(), overrides.begin(), overrides.end());
    return std::string(config::Validate(TinyMoeConfig(all, false), 1).message());
  };
  EXPECT_NE(problems({"precision.fp8_recipe=delayed", "precision.amax_history=0"})
                .find("precision.amax_history = 0 must be > 0"),
            std::string::npos);
  EXPECT_NE(problems({"precision.fp8_recipe=current", "precision.fp8_grad_format=e3m4"})
                .find("precision.fp8_grad_format = \"e3m4\""),
            std::string::npos);
  EXPECT_NE(problems({"precision.fp8_recipe=blockwise", "model.moe.expert_ffn_hidden_size=96"})
                .find("model.moe.expert_ffn_hidden_size 96 is not a multiple of the block size 128"),
            std::string::npos);
  EXPECT_NE(problems({"precision.fp8_recipe=blockwise", "model.hidden_size=192"})
                .find("model.hidden_size 192 is not a multiple of the block size 128"),
            std::string::npos);
  // The per-tensor recipes have no block, and none of this applies without a recipe.
  EXPECT_EQ(problems({"precision.fp8_recipe=current", "model.moe.expert_ffn_hidden_size=96"}), "");
  EXPECT_EQ(problems({"precision.amax_history=0"}), "");
  // A GPU without FP8 tensor cores.
  const absl::Status a100 = model::CheckFp8Device(model::Fp8Recipe::kDelayed, 8, 0, "A100");
  EXPECT_EQ(a100.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(a100.message().find("compute capability 8.9"), absl::string_view::npos);
  EXPECT_NE(a100.message().find("A100 has 8.0"), absl::string_view::npos);
  EXPECT_TRUE(model::CheckFp8Device(model::Fp8Recipe::kBlockwise, 9, 0, "H100").ok());
  EXPECT_TRUE(model::CheckFp8Device(model::Fp8Recipe::kCurrent, 8, 9, "L40S").ok());
  EXPECT_TRUE(model::CheckFp8Device(model::Fp8Recipe::kNone, 7, 0, "V100").ok());
}

}  // namespace
}  // namespace moefold::train
