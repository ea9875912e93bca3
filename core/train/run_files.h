// The files that make a run directory explain itself (docs/ARCHITECTURE.md §9): at the start,
// config.yaml (every setting, defaults included), run.json (command line, layout, environment, the
// MFU peak and where it came from) and plan.json (the rank mapping and every rank's memory
// estimate); at the end, summary.json. Rank 0 writes them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "configs/moefold.pb.h"
#include "core/device.h"
#include "core/train/flops.h"
#include "core/train/peak.h"
#include "core/train/trainer.h"
#include "parallel/mapping.h"

namespace moefold::train {

struct RunInfo {
  std::vector<std::string> command;  // argv of the launch (empty for library callers)
  int world_size = 1;
  std::string layout;                // "tp 2 × dp 2, ep 4", or "one rank"
  Device device = Device::Cpu();     // rank 0's compute device
  Peak peak;
  double model_flops_per_token = 0;
  std::map<std::string, double> flops_per_token_by_family;  // TrainingFlopsPerTokenByFamily
  int64_t tokens_per_step = 0;                               // global batch × sequence length
  ParameterCounts params;
};

// config.yaml, run.json and plan.json under run_dir (created). `mapping` null = one rank.
absl::Status WriteRunFiles(const std::string& run_dir, const config::ExperimentConfig& config,
                           const parallel::Mapping* mapping, const RunInfo& info);
// summary.json: the closing summary's figures.
absl::Status WriteSummaryJson(const std::string& run_dir, const TrainSummary& summary);

}  // namespace moefold::train
