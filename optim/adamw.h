// AdamW over a ParameterSet: owns the f32 first and second moments (m, v) of every parameter, in
// the set's order, and the step count that drives bias correction. Decay applies only to parameters
// with weight_decay == true (norms and biases are excluded where they are created).
//
//   AdamW opt(&params, {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f});
//   opt.Step(LearningRate(schedule, step));   // after gradients are reduced, normalised, clipped
#pragma once

#include <cstdint>
#include <vector>

#include "core/parameter.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::optim {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled (p *= 1 − lr·wd), only for Parameter::weight_decay
};

class AdamW {
 public:
  // Captures the parameters present in `params` now (pointers stay valid: the set owns them by
  // unique_ptr) and allocates zeroed m, v shaped like each value, on its device. `params` must
  // outlive the optimizer and gain no parameters afterwards (checked in Step).
  AdamW(ParameterSet* params, const AdamWOptions& options);

  // Increments the step count t, then for every parameter applies ops::AdamWStep with lr, step t
  // and weight decay options.weight_decay (or 0 for weight_decay == false params):
  //   p *= 1 − lr·wd;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;
  //   p −= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps)
  void Step(float lr, Stream& stream = CpuStream());

  const AdamWOptions& options() const { return options_; }
  int64_t num_params() const { return static_cast<int64_t>(params_.size()); }

  // Checkpoint state: the number of steps taken (0 before the first Step) and the moments of the
  // index-th parameter of the set, (same shape as its value) f32. Restoring = set_step_count plus
  // CopyFrom into m(i), v(i).
  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t step_count);
  Tensor& m(int64_t index);
  Tensor& v(int64_t index);
  const Tensor& m(int64_t index) const;
  const Tensor& v(int64_t index) const;

 private:
  ParameterSet* set_;
  AdamWOptions options_;
  std::vector<Parameter*> params_;
  std::vector<Tensor> m_;
  std::vector<Tensor> v_;
  int64_t step_count_ = 0;
};

}  // namespace moefold::optim
