// The rotary embedding's cos/sin table on the compute device, shared by a decoder's attention
// layers: built once on the host (ops::RopeTable, f64 angles rounded once, so the CPU and the GPU
// rotate by the same factors) for the longest position seen so far, uploaded once per device.
#pragma once

#include <cstdint>

#include "core/model/step_context.h"
#include "core/tensor.h"

namespace moefold::model {

class RopeTables {
 public:
  RopeTables(int64_t head_dim, float theta) : head_dim_(head_dim), theta_(theta) {}
  // A (P, D/2, 2) f32 table on ctx's device with P > max_position (rebuilt, larger, when a
  // longer sequence comes; the upload is enqueued on ctx's stream).
  const Tensor& Get(const StepContext& ctx, int64_t max_position);

 private:
  int64_t head_dim_;
  float theta_;
  Tensor table_;  // on the device of the last Get
};

}  // namespace moefold::model
