// AdamW over a ParameterSet: owns the f32 first and second moments (m, v) of every parameter, in
// the set's order, and the step count that drives bias correction. Decay applies only to parameters
// with weight_decay == true (norms and biases are excluded where they are created). Over a
// flattened set the moments are flat buffers like the set's (flat mode), and one fused pass per
// buffer scales the gradients by a device scalar, updates, and writes the bf16 compute copy.
//
//   AdamW opt(&params, {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f});
//   opt.Step(LearningRate(schedule, step));   // after gradients are reduced, normalised, clipped
//   opt.Step(lr, grad_scale, stream);         // or: grads × grad_scale (1/Z × clip, on the device)
#pragma once

#include <cstdint>
#include <vector>

#include "core/parameter.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "ops/adamw.h"

namespace moefold::optim {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled (p *= 1 − lr·wd), only for Parameter::weight_decay
};

// The ops::AdamWStep options of one step: lr, the (1-based) step count and the optimizer's β, eps
// and weight decay.
ops::AdamWOptions StepOptions(const AdamWOptions& options, float lr, int64_t step);

// The elements of flat-buffer range [begin, end) that get no weight decay (segments of parameters
// with weight_decay == false), as (R, 2) i64 [first, last) ranges relative to `begin`, sorted,
// disjoint, adjacent ones merged; a CPU tensor for ops::AdamWFlatStep (upload it once).
Tensor NoDecayRanges(const FlatBuffer& buffer, int64_t begin, int64_t end);

class AdamW {
 public:
  // Captures the parameters present in `params` now (pointers stay valid: the set owns them by
  // unique_ptr) and allocates zeroed m, v shaped like each value, on its device. `params` must
  // outlive the optimizer and gain no parameters afterwards (checked in Step). When the set is
  // already flattened (ParameterSet::Flatten), m and v are flat f32 buffers shaped like each
  // FlatBuffer's values, on its device (flat mode), with each parameter's m(i), v(i) a view of its
  // segment; the no-decay element ranges of each buffer are built here and uploaded once.
  AdamW(ParameterSet* params, const AdamWOptions& options);

  // Increments the step count t, then for every parameter applies ops::AdamWStep with lr, step t
  // and weight decay options.weight_decay (or 0 for weight_decay == false params):
  //   p *= 1 − lr·wd;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;
  //   p −= lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps)
  void Step(float lr, Stream& stream = CpuStream());
  // The same update with every gradient multiplied by grad_scale[0] first ((1) f32 on the
  // parameters' device, e.g. 1/Z × the clip factor, computed on the host from the global norm and
  // uploaded; the gradients themselves are not changed). Flat mode: one ops::AdamWFlatStep per flat
  // buffer, which also writes the buffer's compute copy when its dtype is not f32, so
  // ParameterSet::RefreshCompute is not needed after it. Otherwise one AdamWFlatStep per parameter.
  // No host wait.
  void Step(float lr, const Tensor& grad_scale, Stream& stream);

  const AdamWOptions& options() const { return options_; }
  int64_t num_params() const { return static_cast<int64_t>(params_.size()); }
  bool flat() const { return !flat_.empty(); }

  // Checkpoint state: the number of steps taken (0 before the first Step) and the moments of the
  // index-th parameter of the set, (same shape as its value) f32. Restoring = set_step_count plus
  // CopyFrom into m(i), v(i) (views into the flat moments in flat mode).
  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t step_count);
  Tensor& m(int64_t index);
  Tensor& v(int64_t index);
  const Tensor& m(int64_t index) const;
  const Tensor& v(int64_t index) const;
  // Flat mode: the second moment of flat buffer i, shaped like its values (SPAM's spike clip reads
  // it for whole gradient buckets).
  Tensor& flat_v(size_t buffer) { return flat_.at(buffer).v; }

 private:
  // Moments and no-decay ranges ((R, 2) i64 [begin, end) on the buffer's device) of flat buffer i.
  struct FlatState {
    Tensor m, v, no_decay_ranges;
  };

  ParameterSet* set_;
  AdamWOptions options_;
  std::vector<Parameter*> params_;
  std::vector<Tensor> m_;  // per parameter: its own tensor, or a view into flat_ in flat mode
  std::vector<Tensor> v_;
  std::vector<FlatState> flat_;  // flat mode: one per ParameterSet::flat_buffers() entry
  Tensor no_ranges_;             // (0, 2) i64 on the parameters' device (per-parameter Step)
  int64_t step_count_ = 0;
};

}  // namespace moefold::optim
