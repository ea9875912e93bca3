// Mixture-of-Experts FFN on normalised input (single-rank dropless path; the all-to-all dispatcher
// joins later between Permute and the expert GEMMs):
//   logits = x·W_gᵀ → top-k (ids, weights) → permute rows by expert → grouped SwiGLU experts →
//   unpermute with the routing weights (sums the k outputs) → + shared experts.
// Forward records an explicit RoutingPlan; Backward replays it and never re-routes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/model/mlp_layer.h"
#include "core/model/model_spec.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

struct RoutingPlan {
  Tensor ids;      // (T, K) i32 chosen experts
  Tensor weights;  // (T, K) f32 routing weights
  Tensor sorted;   // (T·K) i32 pair indices t·K + j in expert-major order
  Tensor counts;   // (E) i32 pairs per expert
};

class MoeLayer {
 public:
  struct Saved {
    Tensor x;       // (T, H)
    Tensor logits;  // (T, E)
    Tensor probs;   // (T, E) full softmax, kept when the aux loss is on
    RoutingPlan plan;
    Tensor permuted;          // (T·K, H)
    Tensor gate, up, act;     // (T·K, F_e)
    Tensor expert_out;        // (T·K, H) before weighting
    SwiGluMlp::Saved shared;  // when shared experts exist
    int64_t batch = 0, seq_len = 0;
  };

  // Parameters: "<prefix>.gate.weight" (E, H) router; stacked experts
  // "<prefix>.experts.{gate,up}_proj.weight" (E, F_e, H) and "<prefix>.experts.down_proj.weight"
  // (E, H, F_e); "<prefix>.shared_experts.*" when num_shared_experts > 0.
  MoeLayer(const ModelSpec& spec, const std::string& prefix, ParameterSet* params);

  // x (T, H) -> y (T, H); adds this layer's aux and z loss values to *stats.
  void Forward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x, Saved* saved,
               Tensor* y, ForwardStats* stats);
  void Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y,
                const BackwardSeeds& seeds, Tensor* d_x) const;

  // Tokens routed to each expert since the last ResetLoad() (for metrics and the expert bias).
  const std::vector<int64_t>& load() const { return load_; }
  void ResetLoad();
  // Aux-loss-free balancing: bias_i += rate · sign(mean load − load_i), from load() (ALGORITHMS §1).
  void UpdateExpertBias(float rate);
  const Tensor& expert_bias() const { return bias_; }

 private:
  ModelSpec spec_;
  Parameter* router_;
  Parameter* gate_;
  Parameter* up_;
  Parameter* down_;
  std::unique_ptr<SwiGluMlp> shared_;
  Tensor bias_;  // (E) f32, selection only; undefined when expert_bias is off
  std::vector<int64_t> load_;
};

}  // namespace moefold::model
