// Helpers of the single-process trainer tests: configs/tiny_moe.yaml with overrides, and a trainer
// that writes no metrics and prints nothing.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "configs/moefold.pb.h"
#include "core/train/trainer.h"

namespace moefold::train {

// configs/tiny_moe.yaml with `overrides` applied (aborts on a load error); with `validate`, also
// checked for one rank (aborts on a problem).
config::ExperimentConfig TinyMoeConfig(const std::vector<std::string>& overrides,
                                       bool validate = true);

// Trainer::Create without metrics or progress output; aborts when creation fails.
std::unique_ptr<Trainer> MakeQuietTrainer(const config::ExperimentConfig& config);

}  // namespace moefold::train
