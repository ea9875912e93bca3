// Pre-norm causal grouped-query attention sub-layer: y = Wo · Attn(RoPE(Wq·n), RoPE(Wk·n), Wv·n),
// n = RMSNorm(x). Under tensor parallelism Wq/Wk/Wv are column-parallel (each TP rank holds whole
// query and KV heads) and Wo row-parallel; under context parallelism attention is a ring over the
// CP group on global positions. The residual add is the caller's; Backward adds this branch's d_x
// into *d_x.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "core/model/model_parallel.h"
#include "core/model/model_spec.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

class AttentionLayer {
 public:
  struct Saved {
    Tensor x;       // (T_x, H) input: T_x = T/tp under sequence parallelism, else T = B·S
    Tensor x_norm;  // (T_x, H)
    Tensor rstd;    // (T_x)
    Tensor x_full;  // (T, H) the normalised input of every TP rank (x_norm itself without SP)
    Tensor q, k, v; // (B, S, Hq/tp | Hkv/tp, D), after RoPE for q and k
    Tensor out;     // (B, S, Hq/tp, D) attention output before Wo
    Tensor lse;     // (B, Hq/tp, S) f32
  };

  AttentionLayer(const ModelSpec& spec, const ModelParallel& mp, const std::string& prefix,
                 ParameterSet* params);

  // x (T_x, H) in ctx.act_dtype -> *y (T_x, H) (allocated here). batch.on_device must be made
  // (WithDeviceCopies). Status: a failed collective.
  absl::Status Forward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x,
                       Saved* saved, Tensor* y) const;
  // d_y (T_x, H) -> *d_x += ∂/∂x; parameter gradients accumulated.
  absl::Status Backward(const StepContext& ctx, const MicroBatch& batch, const Saved& saved,
                        const Tensor& d_y, Tensor* d_x) const;

 private:
  ModelSpec spec_;
  ModelParallel mp_;
  int64_t local_heads_, local_kv_heads_;
  Parameter* norm_;
  Parameter* wq_;
  Parameter* wk_;
  Parameter* wv_;
  Parameter* wo_;
};

}  // namespace moefold::model
