// The trainer's activation store from memory.*: the policy, the host-budget check, and under
// `swap_auto` the swap fraction chosen from the measured host-link bandwidth and the layer's
// forward time at the run's peak (docs/FORMULAS.md §15.4).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/device.h"
#include "core/model/activation_store.h"
#include "parallel/mapping.h"

namespace moefold::train {

// Null for keep (the decoders then save everything themselves). `mapping` null = one rank.
// InvalidArgument: an unknown kind or policy, or a host budget below what α needs.
absl::StatusOr<std::shared_ptr<model::ActivationStore>> MakeActivationStore(
    const config::ExperimentConfig& config, const parallel::Mapping* mapping, int rank,
    const Device& device);

}  // namespace moefold::train
