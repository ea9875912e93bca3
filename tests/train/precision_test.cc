// Mixed precision on the CPU (bf16 activations emulated by the ops, f32 master weights, gradients
// and optimizer state): training tracks the f32 run within bf16 tolerance, the bf16 weights are the
// rounded master weights after every update, and the GPU step refuses no layout.
#include <cmath>

#include "configs/validate.h"
#include "core/cuda_runtime.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"
#include "tests/train/trainer_testing.h"

namespace moefold::train {
namespace {

// The tiny model of these tests (not validated: some layouts need more ranks than one).
config::ExperimentConfig LoadSmall(std::vector<std::string> overrides) {
  std::vector<std::string> all = {"model.hidden_size=32",
                                  "model.num_layers=2",
                                  "model.num_heads=4",
                                  "model.num_kv_heads=2",
                                  "model.ffn_hidden_size=64",
                                  "model.moe.num_experts=4",
                                  "model.moe.top_k=2",
                                  "model.moe.expert_ffn_hidden_size=32",
                                  "model.moe.first_dense_layers=1",
                                  "model.moe.num_shared_experts=1",
                                  "model.moe.aux_loss_type=seq",
                                  "model.moe.z_loss_coeff=0.001",
                                  "train.seq_len=32",
                                  "train.global_batch_size=8",
                                  "train.micro_batch_size=4",
                                  "train.steps=20",
                                  "optimizer.warmup_steps=2",
                                  "data.cache_dir=build/test-data"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return TinyMoeConfig(all, /*validate=*/false);
}

config::ExperimentConfig SmallConfig(std::vector<std::string> overrides) {
  config::ExperimentConfig config = LoadSmall(std::move(overrides));
  MF_CHECK(config::Validate(config, 1).ok()) << config::Validate(config, 1);
  return config;
}

TEST(PrecisionTest, Bf16ActivationsTrackTheF32RunWithinBf16Tolerance) {
  auto f32 = MakeQuietTrainer(SmallConfig({}));
  auto bf16 = MakeQuietTrainer(SmallConfig({"precision.compute_dtype=bf16"}));
  double largest = 0;
  for (int s = 0; s < 20; ++s) {
    auto a = f32->Step(s);
    auto b = bf16->Step(s);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    ASSERT_FALSE(b->skipped) << "step " << s;
    const double rel = std::fabs(b->loss - a->loss) / a->loss;
    EXPECT_LE(rel, 1e-2) << "step " << s << ": f32 " << a->loss << ", bf16 " << b->loss;
    largest = std::max(largest, rel);
  }
  // bf16 really ran: rounding the activations moves the losses off the f32 ones.
  EXPECT_GT(largest, 1e-6);
}

TEST(PrecisionTest, Bf16WeightsAreTheRoundedMasterWeightsAfterEveryUpdate) {
  auto trainer = MakeQuietTrainer(SmallConfig({"precision.compute_dtype=bf16"}));
  for (int s = 0; s < 2; ++s) {
    ASSERT_OK(trainer->Step(s));
    for (const auto& p : trainer->params().params()) {
      ASSERT_EQ(p->value.dtype(), DType::kF32) << p->name;
      ASSERT_EQ(p->compute.dtype(), DType::kBF16) << p->name;
      EXPECT_TENSOR_NEAR(p->compute.To(DType::kF32), p->value.To(DType::kBF16).To(DType::kF32), 0,
                         0)
          << p->name << " after step " << s;
    }
  }
  // In f32 the compute weight is the master weight itself.
  auto f32 = MakeQuietTrainer(SmallConfig({}));
  for (const auto& p : f32->params().params()) {
    EXPECT_EQ(p->compute.raw_data(), p->value.raw_data()) << p->name;
  }
}

// The GPU step refuses no layout: with every model-parallel dimension and EF21 the only error on a
// machine without a GPU is the missing GPU.
TEST(PrecisionTest, TheGpuStepRefusesNoLayout) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "this machine has a GPU";
  auto config = LoadSmall({"train.device=cuda", "precision.compute_dtype=bf16", "parallel.tp=2",
                           "compression.method=ef21", "compression.compressor=int8"});
  TrainerOptions options;
  options.write_metrics = false;
  auto trainer = Trainer::Create(config, options);
  ASSERT_FALSE(trainer.ok());
  EXPECT_EQ(trainer.status().code(), absl::StatusCode::kFailedPrecondition) << trainer.status();
  EXPECT_NE(trainer.status().message().find("train.device is cuda"), absl::string_view::npos)
      << trainer.status();
}

TEST(PrecisionTest, CudaWithoutAGpuIsAClearError) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "this machine has a GPU";
  TrainerOptions options;
  options.write_metrics = false;
  auto trainer = Trainer::Create(SmallConfig({"train.device=cuda"}), options);
  ASSERT_FALSE(trainer.ok());
  EXPECT_EQ(trainer.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(trainer.status().message().find("train.device is cuda"), absl::string_view::npos)
      << trainer.status();
}

}  // namespace
}  // namespace moefold::train
