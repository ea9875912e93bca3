// Pre-norm causal grouped-query attention sub-layer: y = Wo · Attn(RoPE(q), RoPE(k), v) with
// (q, k, v) = W_qkv·n in one GEMM, n = RMSNorm(x). W_qkv holds, per KV head, its query heads, its
// key and its value (core/model/hf_layout.h); one fused pass splits the GEMM output into q, k, v
// and rotates q and k. Under tensor parallelism W_qkv is column-parallel over whole KV-head groups
// and Wo row-parallel; under context parallelism attention is a ring over the CP group on global
// positions. The residual add is the caller's; Backward adds this branch's d_x into *d_x.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model/activation_store.h"
#include "core/model/model_parallel.h"
#include "core/model/model_spec.h"
#include "core/model/rope_tables.h"
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
    // Defined iff an FP8 gather (core/model/fp8_gather.h) made x_full: then x_full holds qkv's
    // E4M3 codes and this (1) f32 is their scale's inverse.
    Tensor x_full_scale_inv;
    Tensor q, k, v; // (B, S, Hq/tp | Hkv/tp, D) contiguous, after RoPE for q and k
    Tensor out;     // (B, S, Hq/tp, D) attention output before Wo
    Tensor lse;     // (B, Hq/tp, S) f32
    // The tape by kind, for the activation store (x is the layer input).
    void AppendRefs(std::vector<SavedRef>* refs);
  };

  // rope: the decoder's shared cos/sin table (not owned; outlives the layer).
  AttentionLayer(const ModelSpec& spec, const ModelParallel& mp, const std::string& prefix,
                 ParameterSet* params, RopeTables* rope);

  // x (T_x, H) in ctx.act_dtype -> *y (T_x, H) (allocated here). batch.on_device must be made
  // (WithDeviceCopies). Status: a failed collective.
  absl::Status Forward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x,
                       Saved* saved, Tensor* y) const;
  // d_y (T_x, H) -> *d_x += ∂/∂x; parameter gradients accumulated. d_x may be d_y itself (the
  // residual stream's gradient): d_y is read before d_x is written.
  absl::Status Backward(const StepContext& ctx, const MicroBatch& batch, const Saved& saved,
                        const Tensor& d_y, Tensor* d_x) const;
  // Recomputes every undefined tensor of *saved from saved->x with Forward's kernels (so the same
  // bits), and of a partly placed one (ctx.recompute_rows) only its missing rows where the op is
  // row-separable (the norm, the QKV projection with RoPE); the TP gather and the CP ring run again
  // where they are needed. Status: a collective.
  absl::Status Recompute(const StepContext& ctx, const MicroBatch& batch, Saved* saved) const;
  // *y (T_x − first, H) = rows [first, T_x) of TpReduce(W_o · saved.out): the branch's output
  // again, from a complete tape. first > 0 only where SplitsOutputRows.
  absl::Status OutputForward(const StepContext& ctx, const MicroBatch& batch, const Saved& saved,
                             int64_t first, Tensor* y) const;
  // Whether a row range of the output needs no TP reduction (one TP rank): the reduction over the
  // whole tensor could sum a row in another order than over a range.
  bool SplitsOutputRows() const { return mp_.tp_size() == 1; }

 private:
  ModelSpec spec_;
  ModelParallel mp_;
  int64_t local_heads_, local_kv_heads_;
  RopeTables* rope_;
  Parameter* norm_;
  Parameter* wqkv_;  // (G, (r+2)·D, H): G KV heads of r query heads each
  Parameter* wo_;
  // This rank's W_qkv as the GEMM's (G_local·(r+2)·D, H) matrix.
  Tensor QkvMatrix() const;
  int64_t QkvWidth() const { return local_heads_ * spec_.head_dim + 2 * local_kv_heads_ * spec_.head_dim; }
};

}  // namespace moefold::model
