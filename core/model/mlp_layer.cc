// SwiGLU MLP forward and backward between the TP region mappings.
#include "core/model/mlp_layer.h"

#include <cmath>

#include "ops/activation.h"
#include "ops/elementwise.h"
#include "ops/gemm.h"
#include "parallel/tensor_parallel.h"

namespace moefold::model {

SwiGluMlp::SwiGluMlp(const ModelSpec& spec, const ModelParallel& mp, const std::string& prefix,
                     int64_t ffn, ParameterSet* params)
    : hidden_(spec.hidden), mp_(mp) {
  MF_CHECK_EQ(ffn % mp.tp_size(), 0) << prefix << ": FFN " << ffn << " over tp " << mp.tp_size();
  local_ffn_ = ffn / mp.tp_size();
  const float out_std = spec.init_std / std::sqrt(2.0f * spec.num_layers);
  gate_ = params->Add(prefix + ".gate_proj.weight", {ffn, hidden_}, GradReduction::kDenseDataCp,
                      spec.init_std, true, 0.0f, mp.Split(0));
  up_ = params->Add(prefix + ".up_proj.weight", {ffn, hidden_}, GradReduction::kDenseDataCp,
                    spec.init_std, true, 0.0f, mp.Split(0));
  down_ = params->Add(prefix + ".down_proj.weight", {hidden_, ffn}, GradReduction::kDenseDataCp,
                      out_std, true, 0.0f, mp.Split(1));
}

absl::Status SwiGluMlp::Forward(const StepContext& ctx, const Tensor& x, Saved* saved,
                                Tensor* y) const {
  MF_RETURN_IF_ERROR(parallel::TpGather(x, mp_.tp, mp_.sequence_parallel, &saved->x));
  const int64_t t = saved->x.dim(0);
  saved->gate = ctx.Act({t, local_ffn_});
  saved->up = ctx.Act({t, local_ffn_});
  saved->act = ctx.Act({t, local_ffn_});
  ops::LinearForward(saved->x, gate_->compute, &saved->gate, ctx.s());
  ops::LinearForward(saved->x, up_->compute, &saved->up, ctx.s());
  ops::SwiGluForward(saved->gate, saved->up, &saved->act, ctx.s());
  Tensor partial = ctx.Act({t, hidden_});
  ops::LinearForward(saved->act, down_->compute, &partial, ctx.s());
  return parallel::TpReduce(partial, mp_.tp, mp_.sequence_parallel, y);
}

absl::Status SwiGluMlp::Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y,
                                 Tensor* d_x) const {
  const int64_t t = saved.x.dim(0);
  Tensor d_y_full;
  MF_RETURN_IF_ERROR(parallel::TpGather(d_y, mp_.tp, mp_.sequence_parallel, &d_y_full));
  Tensor d_act = ctx.Act({t, local_ffn_});
  ops::LinearBackward(saved.act, down_->compute, d_y_full, &d_act, &down_->grad, ctx.s());
  Tensor d_gate = ctx.Act({t, local_ffn_}), d_up = ctx.Act({t, local_ffn_});
  ops::SwiGluBackward(saved.gate, saved.up, d_act, &d_gate, &d_up, ctx.s());
  // d(x) of both projections accumulates in one GEMM chain (beta = 1).
  Tensor d_full = ctx.Act({t, hidden_});
  ops::Gemm(d_gate, false, gate_->compute, false, 1.0f, 0.0f, &d_full, ctx.s());
  ops::Gemm(d_up, false, up_->compute, false, 1.0f, 1.0f, &d_full, ctx.s());
  ops::LinearBackward(saved.x, gate_->compute, d_gate, nullptr, &gate_->grad, ctx.s());
  ops::LinearBackward(saved.x, up_->compute, d_up, nullptr, &up_->grad, ctx.s());
  Tensor d_in;
  MF_RETURN_IF_ERROR(parallel::TpReduce(d_full, mp_.tp, mp_.sequence_parallel, &d_in));
  ops::Add(*d_x, d_in, d_x, ctx.s());
  return absl::OkStatus();
}

}  // namespace moefold::model
