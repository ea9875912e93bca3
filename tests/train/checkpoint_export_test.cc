// `moefold export`'s core (train::ExportCheckpoint): a trained model's checkpoint becomes a Hugging
// Face directory whose import gives back exactly the trainer's f32 weights, from the step directory
// or from the checkpoint directory's newest checkpoint; a model no family represents is refused
// before anything is written, and a directory without a checkpoint is named.
#include <filesystem>

#include "core/hf/import.h"
#include "core/model/decoder.h"
#include "core/train/checkpoint_export.h"
#include "core/train/model_from_config.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/train/trainer_testing.h"

namespace moefold::train {
namespace {

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "moefold-export-" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

config::ExperimentConfig Config(const std::string& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> all = {"train.steps=3", "optimizer.warmup_steps=1",
                                  "data.cache_dir=" + ::testing::TempDir() + "moefold-data",
                                  "checkpoint.dir=" + dir, "checkpoint.every=0"};
  all.insert(all.end(), extra.begin(), extra.end());
  return TinyMoeConfig(all);
}

TEST(CheckpointExportTest, ExportThenImportGivesTheTrainedWeights) {
  const std::string dir = FreshDir("ckpt"), hf_dir = FreshDir("hf");
  const config::ExperimentConfig config = Config(dir);
  auto trainer = MakeQuietTrainer(config);
  ASSERT_TRUE(trainer->Run().ok());  // saves at the last step
  auto exported = ExportCheckpoint(dir, hf_dir, {});
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(std::filesystem::path(*exported).filename(), "step-00000003");

  auto spec = ModelSpecFromConfig(config);
  ASSERT_TRUE(spec.ok());
  ParameterSet imported;
  model::Decoder decoder(*spec, model::ModelParallel{}, &imported);
  ASSERT_TRUE(hf::ImportHuggingFace(hf_dir, *spec, config, &imported).ok());
  const auto& trained = trainer->params().params();
  ASSERT_EQ(imported.params().size(), trained.size());
  for (size_t i = 0; i < trained.size(); ++i) {
    EXPECT_EQ(imported.params()[i]->value.ToVector(), trained[i]->value.ToVector())
        << trained[i]->name;
  }
}

TEST(CheckpointExportTest, RefusesWhatNoFamilyRepresentsAndMissingCheckpoints) {
  const std::string dir = FreshDir("bias"), hf_dir = FreshDir("hf-bias");
  auto trainer = MakeQuietTrainer(Config(dir, {"model.moe.score_function=sigmoid",
                                              "model.moe.expert_bias=true"}));
  ASSERT_TRUE(trainer->Run().ok());
  auto refused = ExportCheckpoint(dir, hf_dir, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("expert_bias"), std::string::npos)
      << refused.status();
  EXPECT_FALSE(std::filesystem::exists(hf_dir + "/config.json"));

  auto missing = ExportCheckpoint(FreshDir("empty"), hf_dir, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no complete checkpoint"), std::string::npos)
      << missing.status();
}

}  // namespace
}  // namespace moefold::train
