// Learning-rate schedules: linear warm-up, then cosine decay, warmup-stable-decay (WSD) or
// constant. Pure function of (options, step): the schedule position is just the step, so resuming a
// run needs no extra state. Steps are 0-based and counted Megatron-style as n = step + 1.
//
//   LrScheduleOptions o{.kind = "cosine", .lr = 3e-4f, .min_lr = 3e-5f, .warmup_steps = 100,
//                       .total_steps = 1000};
//   float lr = LearningRate(o, step);
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace moefold::optim {

struct LrScheduleOptions {
  std::string kind = "cosine";  // "cosine", "wsd" (warmup-stable-decay) or "constant"
  float lr = 1e-3f;             // peak learning rate, reached at the end of warm-up
  float min_lr = 0.0f;          // final learning rate of cosine and wsd (ignored by constant)
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;      // the run's length; decay ends on its last step
  float decay_fraction = 0.1f;  // wsd: the last decay_fraction · total_steps steps decay
};

// InvalidArgument naming the field when: kind is unknown, lr < 0, min_lr < 0 or min_lr > lr,
// warmup_steps < 0, total_steps < 1, warmup_steps > total_steps, decay_fraction outside [0, 1], or
// (wsd) warm-up and decay overlap (warmup_steps + round(decay_fraction · total_steps) >
// total_steps).
absl::Status ValidateLrSchedule(const LrScheduleOptions& options);

// The learning rate of 0-based `step` (options must pass ValidateLrSchedule; checked). With
// n = step + 1, W = warmup_steps, T = total_steps (as Megatron-LM's OptimizerParamScheduler):
//   warm-up   n ≤ W:  lr · n / W                  (step 0 gets lr/W; step W−1 gets lr)
//   cosine:           min_lr + ½(lr − min_lr)(1 + cos(π·(n − W)/(T − W)))
//   wsd:      stable lr while n ≤ T − D, then the 1-sqrt decay (docs/FORMULAS.md §7):
//             min_lr + (lr − min_lr)(1 − sqrt((n − (T − D)) / D)),  D = round(decay_fraction · T)
//   constant: lr
// so the last step of the run (step = T − 1) uses min_lr; steps past the end keep min_lr.
float LearningRate(const LrScheduleOptions& options, int64_t step);

}  // namespace moefold::optim
