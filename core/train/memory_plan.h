// What one rank holds during training, estimated from the config alone (`moefold plan`, for any
// world size, without running): its stage's parameters by sharding, their gradients, the AdamW
// state divided by the ZeRO-1 shard group, and activations per micro-batch times the number a
// pipeline schedule keeps in flight (docs/FORMULAS.md §9), plus the pipeline bubble.
#pragma once

#include <cstdint>
#include <string>

#include "core/json_line.h"

#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/model/activation_store.h"
#include "parallel/mapping.h"

namespace moefold::train {

struct MemoryEstimate {
  int stage = 0;                  // pipeline rank
  int64_t parameters = 0;         // elements held by this rank
  int64_t parameter_bytes = 0;    // f32 master weights (+ a bf16 compute copy under bf16)
  int64_t gradient_bytes = 0;     // f32
  int64_t optimizer_bytes = 0;    // AdamW m and v (f32), divided by the ZeRO-1 group
  int64_t activation_bytes_per_micro = 0;  // one micro-batch through this rank's layers
  int in_flight = 0;              // micro-batches (or chunk passes) the schedule keeps at once
  int64_t activation_bytes = 0;   // per micro-batch × in flight + the backward working set
  // The activation store (docs/FORMULAS.md §15): its policy, the largest backward working set
  // (one layer's restored tensors, the next layer's prefetched rows, gradient temporaries), the
  // swapped rows on the host (× in flight), and the device activations keep would hold.
  std::string activation_policy;  // "keep", "recompute selective", "swap α=0.5", ...
  int64_t activation_working_bytes = 0;
  int64_t activation_host_bytes = 0;
  int64_t activation_host_whole_bytes = 0;  // of it, what is swapped whole at any α > 0
  int64_t keep_activation_bytes = 0;
  int64_t total_bytes = 0;
  double bubble_fraction = 0;     // (pp − 1) / (chunks · micro-batches + pp − 1)
  std::string schedule;           // "afab", "1f1b" or "interleaved"
};

// InvalidArgument when the config does not split (see config::Validate).
absl::StatusOr<MemoryEstimate> EstimateMemory(const config::ExperimentConfig& config,
                                              const parallel::Mapping& mapping, int rank);

// The same for `policy` instead of the config's memory.* (for the --memory-budget suggestion).
absl::StatusOr<MemoryEstimate> EstimateMemory(const config::ExperimentConfig& config,
                                              const parallel::Mapping& mapping, int rank,
                                              const model::ActivationPolicy& policy);

// InvalidArgument, with the arithmetic, when memory.host_budget_gb > 0 is smaller than the host
// bytes the configured swap fraction needs on `rank` (swap_auto chooses α within the budget).
absl::Status CheckHostBudget(const config::ExperimentConfig& config,
                             const parallel::Mapping& mapping, int rank);

// `moefold plan --memory-budget`: the first of keep, recompute selective, swap (α as large as
// memory.host_budget_gb allows), recompute full whose total fits `budget_bytes` on `rank`, with its
// estimate; NotFound naming the smallest total when none fits.
struct PolicySuggestion {
  std::string config;  // the memory.* settings: "memory.activation_policy=recompute ..."
  MemoryEstimate estimate;
};
absl::StatusOr<PolicySuggestion> SuggestActivationPolicy(const config::ExperimentConfig& config,
                                                         const parallel::Mapping& mapping,
                                                         int rank, int64_t budget_bytes);

std::string FormatMemoryEstimate(const MemoryEstimate& m);  // a few lines for `moefold plan`
JsonLine MemoryEstimateJson(const MemoryEstimate& m);      // one JSON object

}  // namespace moefold::train
