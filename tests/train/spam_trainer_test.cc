// SPAM and Stable-SPAM in the trainer: a gradient spike (the test hook multiplies one step's
// gradients by 1e4, with the global clip off) derails AdamW's loss (24% over the unspiked run) and
// barely moves Stable-SPAM's (under 3%); SPAM trains through moment resets with its spike clip;
// bad SPAM settings and SPAM with checkpoints are refused by name.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "configs/validate.h"
#include "core/train/trainer.h"
#include "tests/testing/testing.h"
#include "tests/train/trainer_testing.h"

namespace moefold::train {
namespace {

config::ExperimentConfig SmallConfig(std::vector<std::string> overrides) {
  std::vector<std::string> all = {
      "model.hidden_size=32",       "model.num_layers=2",     "model.num_heads=4",
      "model.num_kv_heads=2",       "model.ffn_hidden_size=64", "model.moe.num_experts=4",
      "model.moe.top_k=2",          "model.moe.expert_ffn_hidden_size=32",
      "model.moe.first_dense_layers=1", "model.moe.layer_freq=1",
      "train.seq_len=16",           "train.global_batch_size=4", "train.micro_batch_size=4",
      "train.steps=40",             "optimizer.warmup_steps=1", "optimizer.lr=0.01",
      "optimizer.grad_clip=0",      "checkpoint.dir=",        "checkpoint.every=0",
      "data.cache_dir=build/test-data"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return TinyMoeConfig(all);
}

// lm losses of `steps` steps, the gradients of step `spike` multiplied by 1e4 (-1: none).
std::vector<double> Losses(const std::string& optimizer, int steps, int64_t spike,
                           std::vector<std::string> overrides = {}) {
  overrides.push_back("optimizer.name=" + optimizer);
  TrainerOptions options;
  options.write_metrics = false;
  options.print_progress = false;
  options.spike_step = spike;
  auto trainer = Trainer::Create(SmallConfig(overrides), options);
  MF_CHECK(trainer.ok()) << trainer.status();
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    auto r = (*trainer)->Step(s);
    MF_CHECK(r.ok()) << r.status();
    EXPECT_FALSE(r->skipped) << optimizer << " step " << s;
    losses.push_back(r->lm_loss);
  }
  return losses;
}

// The worst ratio, over the steps after `spike`, of the loss with the spike to the loss of the
// same run without it (the same batches, so the batch-to-batch spread cancels).
double Jump(const std::vector<double>& spiked, const std::vector<double>& calm, int spike) {
  double worst = 0;
  for (size_t s = spike + 1; s < spiked.size(); ++s) worst = std::max(worst, spiked[s] / calm[s]);
  return worst;
}

TEST(SpamTrainerTest, StableSpamRidesOutAGradientSpikeThatDerailsAdamW) {
  constexpr int kSteps = 40, kSpike = 30;
  // A long schedule keeps the learning rate near its peak around the spike.
  const std::vector<std::string> schedule = {"train.steps=400"};
  const std::vector<double> adamw = Losses("adamw", kSteps, kSpike, schedule);
  const std::vector<double> adamw_calm = Losses("adamw", kSteps, -1, schedule);
  const std::vector<double> stable = Losses("stable_spam", kSteps, kSpike, schedule);
  const std::vector<double> stable_calm = Losses("stable_spam", kSteps, -1, schedule);
  std::printf("worst loss ratio spiked/unspiked after step %d: adamw %.4f, stable_spam %.4f; last "
              "loss adamw %.4f (unspiked %.4f), stable_spam %.4f (unspiked %.4f)\n",
              kSpike, Jump(adamw, adamw_calm, kSpike), Jump(stable, stable_calm, kSpike),
              adamw.back(), adamw_calm.back(), stable.back(), stable_calm.back());
  // Measured: AdamW 1.240 (last loss 7.7% over its unspiked run), Stable-SPAM 1.028 (0.9%).
  EXPECT_GT(Jump(adamw, adamw_calm, kSpike), 1.15);
  EXPECT_LT(Jump(stable, stable_calm, kSpike), 1.05);
  EXPECT_GT(adamw.back(), 1.05 * adamw_calm.back());
  EXPECT_LT(stable.back(), 1.02 * stable_calm.back());
  // Stable-SPAM trains: the loss falls from ≈ ln 257.
  EXPECT_LT(stable_calm.back(), stable_calm.front() - 0.5);
}

TEST(SpamTrainerTest, SpamTrainsThroughAMomentResetAndClipsASpike) {
  // Reset every 10 steps, clip from the 3rd step of each phase, a 5-step ramp after each reset.
  const std::vector<std::string> settings = {"optimizer.spam_reset_interval=10",
                                             "optimizer.spam_clip_delay=2",
                                             "optimizer.spam_warmup_steps=5"};
  const std::vector<double> spam = Losses("spam", 30, 25, settings);
  const std::vector<double> calm = Losses("spam", 30, -1, settings);
  std::printf("spam: first %.4f, last %.4f; worst loss ratio spiked/unspiked after step 25 %.4f\n",
              calm.front(), calm.back(), Jump(spam, calm, 25));
  EXPECT_LT(calm.back(), calm.front() - 0.5);
  EXPECT_LT(Jump(spam, calm, 25), 1.05);  // the spike clip caps the spiking entries
}

TEST(SpamTrainerTest, BadSettingsAreRefusedByName) {
  auto config = TinyMoeConfig({"optimizer.name=stable_spam", "optimizer.spam_gamma1=1",
                               "optimizer.spam_theta=0"},
                              /*validate=*/false);
  const absl::Status status = config::Validate(config, 1);
  ASSERT_FALSE(status.ok());
  const std::string all(status.message());
  EXPECT_NE(all.find("optimizer.spam_gamma1"), std::string::npos) << all;
  EXPECT_NE(all.find("optimizer.spam_theta"), std::string::npos) << all;
  EXPECT_NE(all.find("checkpoint.dir"), std::string::npos) << all;  // tiny_moe.yaml sets one
}

}  // namespace
}  // namespace moefold::train
