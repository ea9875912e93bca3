// SwiGLU MLP forward and backward.
#include "core/model/mlp_layer.h"

#include <cmath>

#include "ops/activation.h"
#include "ops/elementwise.h"
#include "ops/gemm.h"

namespace moefold::model {

SwiGluMlp::SwiGluMlp(const ModelSpec& spec, const std::string& prefix, int64_t ffn,
                     ParameterSet* params)
    : hidden_(spec.hidden), ffn_(ffn) {
  const float out_std = spec.init_std / std::sqrt(2.0f * spec.num_layers);
  gate_ = params->Add(prefix + ".gate_proj.weight", {ffn, hidden_}, GradReduction::kDenseDataCp,
                      spec.init_std);
  up_ = params->Add(prefix + ".up_proj.weight", {ffn, hidden_}, GradReduction::kDenseDataCp,
                    spec.init_std);
  down_ = params->Add(prefix + ".down_proj.weight", {hidden_, ffn}, GradReduction::kDenseDataCp,
                      out_std);
  gate_->sharding.tp_dim = up_->sharding.tp_dim = 0;
  down_->sharding.tp_dim = 1;
}

void SwiGluMlp::Forward(const StepContext& ctx, const Tensor& x, Saved* saved, Tensor* y) const {
  const int64_t t = x.dim(0);
  saved->x = x;
  saved->gate = Tensor::Empty({t, ffn_}, DType::kF32);
  saved->up = Tensor::Empty({t, ffn_}, DType::kF32);
  saved->act = Tensor::Empty({t, ffn_}, DType::kF32);
  ops::LinearForward(x, gate_->value, &saved->gate, ctx.s());
  ops::LinearForward(x, up_->value, &saved->up, ctx.s());
  ops::SwiGluForward(saved->gate, saved->up, &saved->act, ctx.s());
  ops::LinearForward(saved->act, down_->value, y, ctx.s());
}

void SwiGluMlp::Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y,
                         Tensor* d_x) const {
  const int64_t t = saved.x.dim(0);
  Tensor d_act = Tensor::Empty({t, ffn_}, DType::kF32);
  ops::LinearBackward(saved.act, down_->value, d_y, &d_act, &down_->grad, ctx.s());
  Tensor d_gate = Tensor::Empty({t, ffn_}, DType::kF32);
  Tensor d_up = Tensor::Empty({t, ffn_}, DType::kF32);
  ops::SwiGluBackward(saved.gate, saved.up, d_act, &d_gate, &d_up, ctx.s());
  Tensor d_part = Tensor::Empty({t, hidden_}, DType::kF32);
  ops::LinearBackward(saved.x, gate_->value, d_gate, &d_part, &gate_->grad, ctx.s());
  ops::Add(*d_x, d_part, d_x, ctx.s());
  ops::LinearBackward(saved.x, up_->value, d_up, &d_part, &up_->grad, ctx.s());
  ops::Add(*d_x, d_part, d_x, ctx.s());
}

}  // namespace moefold::model
