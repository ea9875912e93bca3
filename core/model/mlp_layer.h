// SwiGLU MLP on already-normalised input: y = W_down · (silu(W_gate·x) ⊙ W_up·x). Used for dense
// layers and for MoE shared experts. Backward adds its d_x into *d_x.
#pragma once

#include <string>

#include "core/model/model_spec.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

class SwiGluMlp {
 public:
  struct Saved {
    Tensor x;     // (T, H)
    Tensor gate;  // (T, F)
    Tensor up;    // (T, F)
    Tensor act;   // (T, F)
  };

  // Parameters "<prefix>.gate_proj.weight" (F, H), "<prefix>.up_proj.weight" (F, H),
  // "<prefix>.down_proj.weight" (H, F).
  SwiGluMlp(const ModelSpec& spec, const std::string& prefix, int64_t ffn, ParameterSet* params);

  void Forward(const StepContext& ctx, const Tensor& x, Saved* saved, Tensor* y) const;
  void Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y, Tensor* d_x) const;

 private:
  int64_t hidden_;
  int64_t ffn_;
  Parameter* gate_;
  Parameter* up_;
  Parameter* down_;
};

}  // namespace moefold::model
