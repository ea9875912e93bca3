// Mixture-of-Experts FFN on normalised input, on the MoE mesh (ETP × EP × EDP):
//   logits = x·W_gᵀ → top-k (ids, weights) → [capacity drop] → permute rows by expert →
//   Dispatch (all-to-all over EP, all-gather over ETP) → grouped SwiGLU of the local experts (one
//   fused gate/up GEMM, each ETP rank holding F_e/etp of every expert's FFN) → Combine
//   (reduce-scatter over ETP, all-to-all home) → unpermute with the routing weights (sums the k
//   outputs) → + shared experts. Dispatch, experts and Combine run per chunk of the local experts,
//   one chunk's exchange overlapping another's GEMMs (parallel::DispatchAndCombine).
// Routing works on the tokens this rank holds after attention: its sequence-parallel slice, or,
// under TP without SP (where every TP rank holds every token), its 1/tp share of the rows, whose
// outputs are then all-gathered over TP, so no token is routed twice. The aux loss counts experts
// over the TP×CP group, so it covers whole sequences (or the whole micro-batch) whatever the
// layout. Forward records an explicit RoutingPlan; Backward replays it and never re-routes.
// The forward's one device-to-host copy is the per-expert pair counts (the device sorts the pairs
// and, in capacity mode, selects the kept ones; the dispatcher and the grouped GEMMs need the
// counts on the host); the aux-loss counts and the aux and z losses stay on the device. Rows move
// in the activation dtype on the activations' device.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model/activation_store.h"
#include "core/model/mlp_layer.h"
#include "parallel/token_dispatcher.h"
#include "core/model/model_parallel.h"
#include "core/model/model_spec.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

// Device tensors live where the activations do; the counts are on the host, where the forward
// plans the dispatch and the grouped GEMMs from them.
struct RoutingPlan {
  Tensor ids;       // (T_r, K) i32 chosen experts (T_r: the rows this rank routes), device
  Tensor weights;   // (T_r, K) f32 routing weights, device
  Tensor sorted;  // (N) i32 kept pair indices t·K + j in expert-major order (N = T_r·K dropless),
                  // device (a view of the first N entries of the capacity op's output)
  Tensor counts;  // (E) i32 kept pairs per expert, host
};

class MoeLayer {
 public:
  struct Saved {
    Tensor x;       // (T_x, H) layer input
    Tensor routed;  // (T_r, H) the rows routed here (x, or this TP rank's share of x)
    int64_t first_row = 0;  // index of routed's first row among the micro-batch's B·S rows
    Tensor logits;          // (T_r, E) f32 (the router runs in f32 on an f32 copy of `routed`)
    Tensor probs;           // (T_r, E) f32 full softmax, kept when the aux loss is on
    Tensor unit_counts;     // (units, E) f32 expert counts of each aux unit over TP×CP, device
    int64_t unit_rows = 0;  // rows of one aux unit on this rank's CP chunk (S or B·S)
    int64_t unit_tokens = 0;  // tokens of one aux unit over the whole sequence
    RoutingPlan plan;
    parallel::DispatchPlan dispatch;
    // The local experts' rows, local-expert major (chunk after chunk, each chunk's rows at its
    // grouped_offset), device, activation dtype:
    Tensor grouped;           // (N_l, H); kFp8E4M3 codes under the FP8 dispatch
    Tensor grouped_scale_inv;  // (N_l, S) f32 their scales (core/model/fp8_dispatch.h), or none
    Tensor gate_up;           // (N_l, 2·F_e/etp): gate columns, then up columns
    Tensor act;               // (N_l, F_e/etp)
    Tensor combined;          // (N, H) this rank's expert outputs before weighting (N kept pairs)
    SwiGluMlp::Saved shared;  // when shared experts exist
    // The tape by kind, for the activation store; `local_experts`: the dispatcher exchanges
    // nothing (EP = ETP = 1), so the dispatched and combined rows can be recomputed.
    void AppendRefs(bool local_experts, std::vector<SavedRef>* refs);
  };

  // Parameters: "<prefix>.gate.weight" (E, H) router; stacked experts
  // "<prefix>.experts.gate_up_proj.weight" (E, 2, F_e, H) and "<prefix>.experts.down_proj.weight"
  // (E, H, F_e), of which this rank holds experts [ep_rank·E/ep, (ep_rank+1)·E/ep) and its ETP
  // slice of F_e; "<prefix>.shared_experts.*" when num_shared_experts > 0.
  MoeLayer(const ModelSpec& spec, const ModelParallel& mp, const std::string& prefix,
           ParameterSet* params);

  // x (T_x, H) -> *y (T_x, H) (allocated here); adds this rank's part of the aux and z losses to
  // ctx's device sums and its aux units to *stats (sums over the TP×CP×DP group give the whole).
  absl::Status Forward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x,
                       Saved* saved, Tensor* y, ForwardStats* stats);
  // d_y (T_x, H) -> *d_x (T_x, H), allocated here (overwritten); parameter gradients accumulated.
  absl::Status Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y,
                        const BackwardSeeds& seeds, Tensor* d_x) const;
  // Recomputes every undefined tensor of *saved from the layer's input x (T_x, H) and the saved
  // routing and dispatch plans with Forward's kernels: the router reruns (no re-routing: the plan
  // stays), and the dispatcher's exchanges never run again — the rows it exchanged are kept
  // (SavedRef::recomputable), so only the local experts' GEMMs repeat. Status: a collective of
  // the shared experts' TP gather.
  absl::Status Recompute(const StepContext& ctx, const Tensor& x, Saved* saved) const;
  bool LocalExperts() const { return mp_.ep_size() == 1 && mp_.etp_size() == 1; }

  // Since the last ResetLoad(): pairs this rank routed to each expert (before capacity drops; for
  // metrics and the bias), pairs it dropped, and bytes its dispatcher sent to other ranks.
  const std::vector<int64_t>& load() const { return load_; }
  int64_t dropped() const { return dropped_; }
  int64_t dispatch_bytes() const { return dispatch_bytes_; }
  void ResetLoad();
  // Aux-loss-free balancing: bias_i += rate · sign(mean load − load_i) (docs/FORMULAS.md §3.3),
  // from the load summed over the ranks that route the global batch (so every rank keeps the same
  // bias).
  void UpdateExpertBias(const std::vector<float>& global_load, float rate);
  const Tensor& expert_bias() const { return bias_; }
  // Checkpoints restore the bias ((E) f32 on the host; only when expert_bias is on, checked).
  void set_expert_bias(const Tensor& bias);
  const std::string& prefix() const { return prefix_; }  // "model.layers.3.mlp"
  // Benchmarks switch between forced-balanced and real routing on one model.
  void set_force_balanced_routing(bool balanced) { spec_.moe.force_balanced_routing = balanced; }

 private:
  // Under TP without sequence parallelism each TP rank routes only its share of the rows.
  bool SplitsRows() const { return mp_.tp_size() > 1 && !mp_.sequence_parallel; }
  // The dispatcher's expert chunks: the spec's, or 2 under expert parallelism (so one chunk's
  // all-to-all overlaps the other's GEMMs) and 1 otherwise.
  int DispatchChunks() const {
    if (spec_.moe.dispatch_chunks > 0) return spec_.moe.dispatch_chunks;
    return mp_.ep_size() > 1 ? 2 : 1;
  }

  // routed (T_r, H) -> the rows to dispatch: permuted in the activation dtype, or under the FP8
  // dispatch, where the experts are spread over ranks, quantised while permuted (codes and
  // scales, core/model/fp8_dispatch.h).
  absl::StatusOr<parallel::DispatchRows> PermuteForDispatch(const StepContext& ctx,
                                                            const Tensor& routed,
                                                            const Tensor& sorted) const;
  // The gate/up grouped GEMM on dispatched rows: FP8 codes (with scale_inv) or activations.
  absl::Status GateUpForward(const StepContext& ctx, int64_t first_expert, const Tensor& grouped,
                             const Tensor& scale_inv, const Tensor& w, const Tensor& counts,
                             Tensor* y) const;

  ModelSpec spec_;
  ModelParallel mp_;
  // This rank's experts' fused gate/up weight as the grouped GEMM's (E_l, 2·F_e/etp, H).
  Tensor GateUpExperts(const Tensor& t) const;

  Parameter* router_;
  Parameter* gate_up_;
  Parameter* down_;
  std::unique_ptr<SwiGluMlp> shared_;
  Tensor bias_;  // (E) f32 on the host, selection only; undefined when expert_bias is off
  std::string prefix_;
  std::vector<int64_t> load_;
  int64_t dropped_ = 0;
  mutable int64_t dispatch_bytes_ = 0;  // a counter the (const) backward's exchanges add to
};

}  // namespace moefold::model
