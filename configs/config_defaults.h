// The default experiment: every field of ExperimentConfig set explicitly, so a YAML file only
// states what differs. Loading merges the file over these (proto3 `optional` presence lets 0/false
// override).
//
//   config::ExperimentConfig c = config::DefaultConfig();   // a small dense model, one CPU rank
#pragma once

#include "configs/moefold.pb.h"

namespace moefold::config {

// Megatron-like defaults: a 4-layer dense byte-level model (vocab 257, hidden 256) trained on one
// CPU rank in f32; tp = cp = pp = etp = ep = 1 and dp = 0 (derived from the world size); AdamW lr
// 3e-4 → min_lr 3e-5 on a cosine schedule with warmup = 10% of train.steps; MoE switched off
// (num_experts 0) but with top-2 softmax routing, batch aux loss 1e-2 and dropless capacity ready.
// DefaultConfig() passes Validate(config, 1).
ExperimentConfig DefaultConfig();

// The warmup used when the experiment does not set optimizer.warmup_steps: 10% of train.steps.
int DefaultWarmupSteps(int steps);

}  // namespace moefold::config
