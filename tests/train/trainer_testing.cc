// Helpers of the single-process trainer tests.
#include "tests/train/trainer_testing.h"

#include "configs/config_loader.h"
#include "configs/validate.h"

namespace moefold::train {

config::ExperimentConfig TinyMoeConfig(const std::vector<std::string>& overrides, bool validate) {
  auto config = config::LoadConfigFile("configs/tiny_moe.yaml", overrides);
  MF_CHECK(config.ok()) << config.status();
  if (validate) MF_CHECK(config::Validate(*config, 1).ok()) << config::Validate(*config, 1);
  return *config;
}

std::unique_ptr<Trainer> MakeQuietTrainer(const config::ExperimentConfig& config) {
  TrainerOptions options;
  options.write_metrics = false;
  options.print_progress = false;
  auto trainer = Trainer::Create(config, options);
  MF_CHECK(trainer.ok()) << trainer.status();
  return std::move(*trainer);
}

}  // namespace moefold::train
