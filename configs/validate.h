// Whole-experiment validation (docs/ARCHITECTURE.md §7): every problem at once, each with its
// arithmetic, before any rank allocates memory.
//
//   if (absl::Status s = config::Validate(c, world_size); !s.ok()) { print s.message(); }
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "configs/moefold.pb.h"

namespace moefold::config {

// OK, or one InvalidArgument listing every problem, one per line ("- ..."), e.g.
//   - world 8 != tp 2 × cp 1 × dp 2 × pp 1 = 4
//   - model.moe.num_experts 6 % parallel.ep 4 = 2: each EP rank owns num_experts / ep experts
// Checks: positive sizes; head/KV-head/hidden divisibility and an even head_dim (RoPE); MoE top-k,
// expert sizes and group-limited routing; both meshes (W = tp·cp·dp·pp = etp·ep·edp·pp) and what
// they split (heads and FFN by tp, experts by ep, expert FFN by etp, sequence by 2·cp, layers by
// pp·virtual_stages, global batch by micro batch · dp); every string option among its allowed
// values; optimizer, schedule, reweighting, compression and logging ranges.
absl::Status Validate(const ExperimentConfig& config, int world_size);

// A check Validate cannot make from the config alone — a memory estimate needs the model library,
// which depends on this one. It appends problems in Validate's style, each with its arithmetic.
// The library that owns it registers it once (train::RegisterExperimentChecks, which the moefold
// binary calls at start-up); Validate runs every registered check, in name order, after its own
// checks found nothing (the estimates assume a layout that divides).
using ExperimentCheck = std::function<void(const ExperimentConfig& config, int world_size,
                                           std::vector<std::string>* problems)>;
// Registers `check` under `name`; registering a name again replaces its check. Thread-safe.
void RegisterExperimentCheck(const std::string& name, ExperimentCheck check);

// parallel.dp when set (> 0), else world / (tp · cp · pp); 0 when that does not divide or a size is
// not positive.
int DerivedDp(const ExperimentConfig& config, int world_size);

// world / (etp · ep · pp), the expert-data-parallel size; 0 when that does not divide or a size is
// not positive.
int DerivedEdp(const ExperimentConfig& config, int world_size);

// Number of MoE layers: layer l is MoE when num_experts > 0, layer_freq > 0, l >=
// first_dense_layers and (l - first_dense_layers) % layer_freq == 0 (the rule of moefold.proto).
int CountMoeLayers(const ExperimentConfig& config);

// Steps first..last, 0-based and inclusive.
struct StepRange {
  int64_t first = 0;
  int64_t last = 0;
};
// logging.trace_steps: "START-END" (digits, START <= END) as its range, "" as none (nullopt);
// InvalidArgument naming the text otherwise.
absl::StatusOr<std::optional<StepRange>> ParseTraceSteps(absl::string_view text);

// Layers of each virtual pipeline stage s = chunk·pp + rank, in order (pp · virtual_stages entries):
// the first and last get first_stage_layers / last_stage_layers when those are set (> 0), the
// others split the remaining layers evenly. InvalidArgument with the arithmetic when they do not.
absl::StatusOr<std::vector<int>> StageLayerCounts(const ExperimentConfig& config);

}  // namespace moefold::config
