// SwiGLU MLP on already-normalised input: y = W_down · (silu(W_gate·x) ⊙ W_up·x). Used for dense
// layers and for MoE shared experts. Under tensor parallelism W_gate/W_up are column-parallel and
// W_down row-parallel (each TP rank holds F/tp of the FFN). Backward adds its d_x into *d_x.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "core/model/model_parallel.h"
#include "core/model/model_spec.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

class SwiGluMlp {
 public:
  struct Saved {
    Tensor x;     // (T, H) the input of every TP rank (x itself without sequence parallelism)
    Tensor gate;  // (T, F/tp)
    Tensor up;    // (T, F/tp)
    Tensor act;   // (T, F/tp)
  };

  // Parameters "<prefix>.gate_proj.weight" (F, H), "<prefix>.up_proj.weight" (F, H),
  // "<prefix>.down_proj.weight" (H, F), F = ffn (global); F % tp == 0 (Validate checks).
  SwiGluMlp(const ModelSpec& spec, const ModelParallel& mp, const std::string& prefix, int64_t ffn,
            ParameterSet* params);

  // x (T_x, H) -> *y (T_x, H) (allocated here); T_x = T/tp under sequence parallelism.
  absl::Status Forward(const StepContext& ctx, const Tensor& x, Saved* saved, Tensor* y) const;
  absl::Status Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y,
                        Tensor* d_x) const;

 private:
  int64_t hidden_;
  int64_t local_ffn_;
  ModelParallel mp_;
  Parameter* gate_;
  Parameter* up_;
  Parameter* down_;
};

}  // namespace moefold::model
