// The trainer's activation store from memory.*: the policy, the host-budget check, and under
// `swap_auto` the swap fraction chosen from the measured host-link bandwidth and the layer's
// forward time at the run's peak (docs/FORMULAS.md §15.4).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/device.h"
#include "core/model/activation_store.h"
#include "parallel/communicator.h"
#include "parallel/mapping.h"

namespace moefold::train {

// Null for keep (the decoders then save everything themselves). `mapping` null = one rank.
// `world` (null = one rank): under swap_auto every rank measures its own α and all take the
// smallest (a min-reduce over world, which every rank joins), so the run swaps one share
// everywhere and the α printed is every rank's.
// InvalidArgument: an unknown kind or policy, or a host budget below what α needs.
absl::StatusOr<std::shared_ptr<model::ActivationStore>> MakeActivationStore(
    const config::ExperimentConfig& config, const parallel::Mapping* mapping, int rank,
    const Device& device, parallel::Communicator* world = nullptr);

}  // namespace moefold::train
