// `moefold plan --predict` (docs/SIMULATOR.md): the step time, throughput, MFU and memory of one
// experiment config on `world` GPUs of a Cluster, with the breakdown behind them — each layer
// kind's compute by op family, each communication by group kind (inside a node or across, exposed
// or hidden), the pipeline bubble, the data-parallel reduction, the optimizer and the input data.
//
//   MF_ASSIGN_OR_RETURN(sim::Prediction p, sim::Predict(config, 128, cluster));
//   std::fputs(sim::FormatPrediction(p).c_str(), stdout);
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/json_line.h"
#include "core/train/sim/cluster.h"
#include "core/train/sim/layer_costs.h"
#include "core/train/memory_plan.h"

namespace moefold::sim {

// One pipeline rank's work for one micro-batch (all of its chunks).
struct StageTime {
  int stage = 0;
  int layers = 0;
  double forward = 0, backward = 0;  // compute seconds
  double exposed_comm = 0;           // TP, CP, EP/ETP and pipeline transfers on the critical path
  double Total() const { return forward + backward + exposed_comm; }
  double dense_parameters = 0, expert_parameters = 0;  // elements this rank holds
};

struct Prediction {
  std::string cluster;
  int world = 1, nodes = 1;
  std::string layout;    // "tp2 cp1 dp8 pp8 vpp1 | ep8 etp1 edp2 | mbs1"
  std::string schedule;  // "1f1b", "interleaved", "afab"
  SimContext ctx;
  double step_seconds = 0, tokens_per_s = 0;
  double flops_per_token = 0;       // core/train/flops.h (recomputation not counted)
  double model_tflops_per_gpu = 0, mfu = 0;  // MFU against the cluster's bf16 peak
  // The step: num_micro × the slowest stage, the bubble, then what follows the last backward.
  double pipeline_seconds = 0, bubble_seconds = 0, dp_seconds = 0, dp_exposed_seconds = 0,
         optimizer_seconds = 0, data_seconds = 0;
  std::vector<StageTime> stages;
  std::vector<LayerCost> layer_kinds;  // per micro-batch: dense / moe layer, embedding, head
  std::vector<CommTime> step_comms;    // per step: gradient reductions, ZeRO-1 gather, pipeline
  train::MemoryEstimate memory;        // the pipeline stage that needs the most
  double memory_capacity_bytes = 0;
  bool fits = true;
};

// InvalidArgument with config::Validate's problems (each with its arithmetic) when the config
// does not run on `world` ranks.
absl::StatusOr<Prediction> Predict(const config::ExperimentConfig& config, int world,
                                   const Cluster& cluster, const PredictOptions& options = {});

// Parameters one pipeline rank holds, split by the group that reduces their gradients: dense
// (DP×CP, including TP-replicated norms and router) and expert (EDP). Their sum equals
// train::EstimateMemory's `parameters` for that stage.
void StageParameters(const SimContext& ctx, const std::vector<int>& stage_layers, int stage,
                     double* dense, double* expert);

std::string FormatPrediction(const Prediction& p);  // the text of `moefold plan --predict`
std::string FormatPredictionSummary(const Prediction& p);  // one line (--search rows)
JsonLine PredictionJson(const Prediction& p);

}  // namespace moefold::sim
