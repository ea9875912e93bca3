// model.init_from in the trainer: a run started from an export holds exactly the exported weights
// (whatever its own seed) and trains like the run that was exported; a config.json that disagrees
// with the experiment stops Trainer::Create with both values named.
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "core/hf/export.h"
#include "core/train/model_from_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"
#include "tests/train/trainer_testing.h"

namespace moefold::hf {
namespace {

config::ExperimentConfig Small(std::vector<std::string> overrides) {
  std::vector<std::string> all = {
      "model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.num_kv_heads=2",
      "model.ffn_hidden_size=64", "model.moe.num_experts=4", "model.moe.top_k=2",
      "model.moe.expert_ffn_hidden_size=32", "model.moe.first_dense_layers=1",
      "model.moe.layer_freq=1", "train.seq_len=16", "train.global_batch_size=4",
      "train.micro_batch_size=4", "train.steps=2", "optimizer.warmup_steps=1",
      "data.cache_dir=build/test-data"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return train::TinyMoeConfig(all);
}

TEST(InitFromTest, TrainerStartsFromTheExportedWeights) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("mf_init_from_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  const config::ExperimentConfig config = Small({"train.seed=1"});
  auto source = train::MakeQuietTrainer(config);
  absl::StatusOr<model::ModelSpec> spec = train::ModelSpecFromConfig(config);
  ASSERT_OK(spec);
  ASSERT_OK(ExportHuggingFace(source->params(), *spec, config, dir, ExportOptions{}));

  auto started = train::MakeQuietTrainer(Small({"train.seed=1", "model.init_from=" + dir}));
  auto other_seed = train::MakeQuietTrainer(Small({"train.seed=77", "model.init_from=" + dir}));
  const auto& a = source->params().params();
  for (train::Trainer* t : {started.get(), other_seed.get()}) {
    const auto& b = t->params().params();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(std::memcmp(a[i]->value.raw_data(), b[i]->value.raw_data(), a[i]->value.nbytes()), 0)
          << a[i]->name;
    }
  }
  // Same weights, same seed: the same first step.
  absl::StatusOr<train::StepResult> ra = source->Step(0), rb = started->Step(0);
  ASSERT_OK(ra);
  ASSERT_OK(rb);
  EXPECT_EQ(ra->loss, rb->loss);

  train::TrainerOptions quiet;
  quiet.write_metrics = false;
  quiet.print_progress = false;
  const absl::Status s = train::Trainer::Create(
      Small({"model.init_from=" + dir, "model.moe.num_experts=8"}), quiet).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              ::testing::HasSubstr("config.json num_experts 4 != model.moe.num_experts 8"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moefold::hf
