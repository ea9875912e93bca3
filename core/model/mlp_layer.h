// SwiGLU MLP on already-normalised input: y = W_down · (silu(g) ⊙ u) with [g | u] = W_gate_up·x in
// one GEMM. Used for dense layers and for MoE shared experts. Under tensor parallelism W_gate_up
// is column-parallel (each TP rank holds F/tp gate rows and the matching F/tp up rows) and W_down
// row-parallel. Backward writes the input gradient to *d_x.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/model/activation_store.h"
#include "core/model/fp8_operand.h"
#include "core/model/model_parallel.h"
#include "core/model/model_spec.h"
#include "core/model/step_context.h"
#include "core/parameter.h"

namespace moefold::model {

class SwiGluMlp {
 public:
  struct Saved {
    Tensor x;        // (T, H) the input of every TP rank (x itself without sequence parallelism)
    Tensor x_scale_inv;  // defined iff an FP8 gather made x: x holds E4M3 codes, this their scale
    Tensor gate_up;  // (T, 2·F/tp): gate in columns [0, F/tp), up in [F/tp, 2·F/tp)
    Tensor act;      // (T, F/tp) silu(gate) ⊙ up
    void AppendRefs(std::vector<SavedRef>* refs);  // the tape by kind, for the activation store
  };

  // Parameters "<prefix>.gate_up_proj.weight" (2, F, H) ([0] gate, [1] up; core/model/hf_layout.h)
  // and "<prefix>.down_proj.weight" (H, F), F = ffn (global); F % tp == 0 (Validate checks).
  SwiGluMlp(const ModelSpec& spec, const ModelParallel& mp, const std::string& prefix, int64_t ffn,
            ParameterSet* params);

  // x (T_x, H) -> *y (T_x, H); T_x = T/tp under sequence parallelism. With `accumulate` the
  // output is added to an existing *y (MoE shared experts join the routed output; without TP the
  // down projection's GEMM adds it, beta = 1), else *y is allocated here.
  // `x_quantized`: x already in FP8 for the gate_up GEMM (PrepareFusedInput, then the norm that
  // produces x); x itself is still saved for the backward, or, where an FP8 gather moves this
  // rank's codes (core/model/fp8_gather.h), the gathered codes are.
  absl::Status Forward(const StepContext& ctx, const Tensor& x, Saved* saved, Tensor* y,
                       bool accumulate = false, const Fp8Operand* x_quantized = nullptr) const;
  // For the producer of this MLP's input (rows, H) under an FP8 recipe that fuses (ctx.fp8's
  // PrepareFusedInput for gate_up): true and *target set, or false where no recipe runs, the
  // recipe does not fuse, or a sequence-parallel gather in the activation dtype stands between
  // producer and GEMM.
  bool PrepareFusedInput(const StepContext& ctx, int64_t rows, Fp8ProducerTarget* target) const;
  // d_y (T_x, H) -> *d_x (T_x, H), allocated here (overwritten), or with `accumulate` added to an
  // existing *d_x (without TP by the input-gradient GEMM itself); parameter gradients accumulated.
  absl::Status Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y, Tensor* d_x,
                        bool accumulate = false) const;
  // Recomputes every undefined tensor of *saved from the layer's input x (T_x, H) with Forward's
  // kernels (the TP gather runs again under sequence parallelism). Status: a failed collective.
  absl::Status Recompute(const StepContext& ctx, const Tensor& x, Saved* saved) const;

 private:
  Tensor GateUpMatrix() const;  // this rank's W_gate_up as the GEMM's (2·F/tp, H) matrix
  // The TP reduction of a partial sum (T, H) into *out: assigned, or with `accumulate` added.
  absl::Status ReduceInto(const StepContext& ctx, const Tensor& partial, bool accumulate,
                          Tensor* out) const;

  int64_t hidden_;
  int64_t local_ffn_;
  ModelParallel mp_;
  Parameter* gate_up_;
  Parameter* down_;
};

}  // namespace moefold::model
