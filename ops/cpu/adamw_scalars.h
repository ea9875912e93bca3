// The per-step scalars of AdamW (internal to ops/): the bias corrections computed once on the host
// in f64 like PyTorch's Python scalars and rounded to f32, shared by the CPU reference and the CUDA
// kernels, so both update every element with the same numbers.
#pragma once

#include "ops/adamw.h"

namespace moefold::ops::internal {

struct AdamWScalars {
  float step_size;              // lr / (1 − β1^t)
  float bias_correction2_sqrt;  // sqrt(1 − β2^t)
  float decay;                  // 1 − lr·wd
  float no_decay;               // 1 − lr·0: a weight decay of 0 (1 unless lr is not finite)
  float beta1, beta2, eps;
};

// Checks options.step ≥ 1 (naming `op`).
AdamWScalars AdamWScalarsOf(const AdamWOptions& options, const char* op);

}  // namespace moefold::ops::internal
