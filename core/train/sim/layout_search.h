// `moefold plan --search` (docs/SIMULATOR.md §5): every layout of a world size that
// config::Validate accepts — tp, cp, pp, virtual stages, ep, etp and the micro-batch size — is
// predicted; those that do not fit in the GPU's memory are dropped and the rest ranked by
// predicted throughput, best first.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/train/sim/cluster.h"
#include "core/train/sim/predict.h"

namespace moefold::sim {

struct SearchOptions {
  int world = 1;
  std::vector<int> micro_batch_sizes = {1, 2, 4};
  int top = 10;  // how many of the ranked layouts to keep
  PredictOptions predict;
};

struct SearchResult {
  std::vector<Prediction> best;     // fitting layouts, highest tokens/s first, at most `top`
  std::vector<config::ExperimentConfig> configs;  // the config of each entry of `best`
  int valid = 0;                    // layouts Validate accepted
  int over_memory = 0;              // of those, the ones that do not fit
  std::string smallest_over;        // the over-memory layout that needs least, and how much
};

// The candidate configs: `base` with parallel.{tp, cp, dp = derived, pp, virtual_stages, ep, etp,
// sequence_parallel = tp > 1, schedule auto} and train.micro_batch_size replaced, kept when
// config::Validate(candidate, world) accepts it.
std::vector<config::ExperimentConfig> EnumerateLayouts(const config::ExperimentConfig& base,
                                                       const Cluster& cluster,
                                                       const SearchOptions& options);

// FailedPrecondition when no valid layout exists or none fits (naming the one that needs least,
// with its arithmetic).
absl::StatusOr<SearchResult> SearchLayouts(const config::ExperimentConfig& base,
                                           const Cluster& cluster, const SearchOptions& options);

}  // namespace moefold::sim
