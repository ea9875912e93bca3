// Checkpoints of a GPU run (skips without a GPU): the state goes through pinned host copies and the
// background writer, and comes back onto the device. The quick-start model in bf16 on cuda:0,
// saved after 5 of 10 steps and resumed in a new trainer, continues bit-identically; a checkpoint
// written by the CPU run loads onto the GPU exactly (f32 master weights are the same bits).
#include <filesystem>

#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/testing/cuda_testing.h"
#include "tests/train/trainer_testing.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 10, kSaveAt = 5;

config::ExperimentConfig Config(const std::string& dir, std::vector<std::string> extra) {
  std::vector<std::string> all = {"train.steps=10", "optimizer.warmup_steps=2",
                                  "data.cache_dir=" + ::testing::TempDir() + "moefold-data",
                                  "checkpoint.dir=" + dir};
  all.insert(all.end(), extra.begin(), extra.end());
  return TinyMoeConfig(all);
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "moefold-ckpt-" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(CudaCheckpointTest, ResumedBf16GpuRunIsBitIdentical) {
  MF_REQUIRE_GPU();
  const std::string dir = FreshDir("bf16");
  const auto config =
      Config(dir, {"train.device=cuda", "precision.compute_dtype=bf16", "parallel.zero1=false"});
  std::vector<StepResult> whole;
  {
    auto trainer = MakeQuietTrainer(config);
    for (int s = 0; s < kSteps; ++s) whole.push_back(*trainer->Step(s));
  }
  {
    auto trainer = MakeQuietTrainer(config);
    for (int s = 0; s < kSaveAt; ++s) ASSERT_TRUE(trainer->Step(s).ok());
    ASSERT_TRUE(trainer->BeginSave(kSaveAt).ok());
    ASSERT_TRUE(trainer->FinishSave().ok());
  }
  auto trainer = MakeQuietTrainer(config);
  auto resumed = trainer->Resume();
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_EQ(*resumed, kSaveAt);
  for (int s = kSaveAt; s < kSteps; ++s) {
    auto r = trainer->Step(s);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->loss, whole[s].loss) << "step " << s;
    EXPECT_EQ(r->grad_norm, whole[s].grad_norm) << "step " << s;
  }
}

TEST(CudaCheckpointTest, CpuCheckpointLoadsOntoTheGpu) {
  MF_REQUIRE_GPU();
  const std::string dir = FreshDir("cpu-to-gpu");
  std::vector<std::vector<float>> saved;
  {
    auto trainer = MakeQuietTrainer(Config(dir, {}));
    for (int s = 0; s < kSaveAt; ++s) ASSERT_TRUE(trainer->Step(s).ok());
    ASSERT_TRUE(trainer->BeginSave(kSaveAt).ok());
    ASSERT_TRUE(trainer->FinishSave().ok());
    for (const auto& p : trainer->params().params()) saved.push_back(p->value.ToVector());
  }
  auto trainer = MakeQuietTrainer(Config(dir, {"train.device=cuda"}));
  ASSERT_TRUE(trainer->Resume().ok());
  const auto& params = trainer->params().params();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(params[i]->value.ToVector(), saved[i]) << params[i]->name;
  }
  EXPECT_TRUE(trainer->Step(kSaveAt).ok());
}

}  // namespace
}  // namespace moefold::train
