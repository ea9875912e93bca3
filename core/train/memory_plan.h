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
  int64_t activation_bytes = 0;   // per micro-batch × in flight (+ the head's logits)
  int64_t total_bytes = 0;
  double bubble_fraction = 0;     // (pp − 1) / (chunks · micro-batches + pp − 1)
  std::string schedule;           // "afab", "1f1b" or "interleaved"
};

// InvalidArgument when the config does not split (see config::Validate).
absl::StatusOr<MemoryEstimate> EstimateMemory(const config::ExperimentConfig& config,
                                              const parallel::Mapping& mapping, int rank);

std::string FormatMemoryEstimate(const MemoryEstimate& m);  // a few lines for `moefold plan`
JsonLine MemoryEstimateJson(const MemoryEstimate& m);      // one JSON object

}  // namespace moefold::train
