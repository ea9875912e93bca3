// Pre-norm causal grouped-query attention sub-layer: y = Wo · Attn(RoPE(Wq·n), RoPE(Wk·n), Wv·n),
// n = RMSNorm(x). The residual add is the caller's; Backward adds this branch's d_x into *d_x.
#pragma once

#include <string>

#include "core/model/model_spec.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

class AttentionLayer {
 public:
  struct Saved {
    Tensor x;       // (T, H) input
    Tensor x_norm;  // (T, H)
    Tensor rstd;    // (T)
    Tensor q, k, v; // (B, S, Hq|Hkv, D), after RoPE for q and k
    Tensor out;     // (B, S, Hq, D) attention output before Wo
    Tensor lse;     // (B, Hq, S)
    Tensor positions;  // (T) i32
  };

  AttentionLayer(const ModelSpec& spec, const std::string& prefix, ParameterSet* params);

  // x (T, H) f32 with T = B·S -> y (T, H) f32.
  void Forward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x, Saved* saved,
               Tensor* y) const;
  // d_y (T, H) -> *d_x += ∂/∂x; parameter gradients accumulated.
  void Backward(const StepContext& ctx, const MicroBatch& batch, const Saved& saved,
                const Tensor& d_y, Tensor* d_x) const;

 private:
  ModelSpec spec_;
  Parameter* norm_;
  Parameter* wq_;
  Parameter* wk_;
  Parameter* wv_;
  Parameter* wo_;
};

}  // namespace moefold::model
