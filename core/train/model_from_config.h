// Converts the experiment config (protobuf) into the plain structs the model and optimizer take, and
// refuses settings this build cannot run yet with an error naming each of them.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/model/model_spec.h"

namespace moefold::train {

absl::StatusOr<model::ModelSpec> ModelSpecFromConfig(const config::ExperimentConfig& config);

}  // namespace moefold::train
