// Evaluation (docs/ARCHITECTURE.md §6, "Evaluation"): the forward pass alone over global batches of
// the validation or test split, on every layout, with the per-sample LM losses summed as the
// training step sums them (no reweighting: the plain mean over samples), eval_loss = that mean and
// eval_ppl = exp(eval_loss). Evaluation k (0-based) after step s reads validation batches
// [k·eval_iters, (k+1)·eval_iters), the next stretch of the split as Megatron-LM's validation
// iterator; the final test evaluation reads test batches [0, eval_iters).
#pragma once

#include <cstdint>
#include <optional>

#include "configs/moefold.pb.h"
#include "core/json_line.h"

namespace moefold::train {

struct EvalResult {
  double loss = 0;  // mean over the samples of each sample's mean token cross entropy
  double ppl = 0;   // exp(loss)
  int64_t samples = 0;
  int64_t tokens = 0;  // with a target
  double wall_s = 0;
};

// What the evaluation hook measured after one step (either may be absent).
struct StepEvaluation {
  std::optional<EvalResult> valid;
  std::optional<EvalResult> test;
};

// Samples the splits must provide, as Megatron's train_valid_test_num_samples: train = steps · G;
// valid = (steps / eval_every + 1) · eval_iters · G when eval_every > 0, else 0; test = eval_iters
// · G (built only when data.split has a test share).
struct SplitSampleCounts {
  int64_t train = 0, valid = 0, test = 0;
};
SplitSampleCounts SamplesPerSplit(const config::ExperimentConfig& config);

// The validation evaluation due after `steps_done` steps: its index k, or nullopt. Due when
// steps_done is a multiple of eval_every (k = steps_done / eval_every − 1) and at the last step
// when that is not one (k = steps / eval_every, Megatron's end-of-training evaluation).
std::optional<int64_t> ValidEvaluationIndex(const config::TrainConfig& train, int64_t steps_done);

// Adds eval_loss, eval_ppl (and test_loss, test_ppl) to a metrics line.
void AddEvaluation(const StepEvaluation& evaluation, JsonLine* line);

}  // namespace moefold::train
