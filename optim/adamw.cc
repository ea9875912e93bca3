// AdamW over a ParameterSet (see adamw.h): per-parameter state, one ops::AdamWStep call each.
#include "optim/adamw.h"

#include "core/status.h"
#include "ops/adamw.h"

namespace moefold::optim {

AdamW::AdamW(ParameterSet* params, const AdamWOptions& options) : set_(params), options_(options) {
  MF_CHECK(params != nullptr) << "AdamW: null ParameterSet";
  params_.reserve(params->params().size());
  for (const auto& p : params->params()) {
    params_.push_back(p.get());
    m_.push_back(Tensor::Zeros(p->value.shape(), DType::kF32, p->value.device()));
    v_.push_back(Tensor::Zeros(p->value.shape(), DType::kF32, p->value.device()));
  }
}

void AdamW::Step(float lr, Stream& stream) {
  MF_CHECK_EQ(set_->params().size(), params_.size())
      << "AdamW: parameters were added to the set after the optimizer was created";
  ++step_count_;
  ops::AdamWOptions step_options;
  step_options.lr = lr;
  step_options.beta1 = options_.beta1;
  step_options.beta2 = options_.beta2;
  step_options.eps = options_.eps;
  step_options.step = step_count_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter* p = params_[i];
    step_options.weight_decay = p->weight_decay ? options_.weight_decay : 0.0f;
    ops::AdamWStep(step_options, p->grad, &p->value, &m_[i], &v_[i], stream);
  }
}

void AdamW::set_step_count(int64_t step_count) {
  MF_CHECK_GE(step_count, 0) << "AdamW: negative step count";
  step_count_ = step_count;
}

Tensor& AdamW::m(int64_t index) {
  MF_CHECK(index >= 0 && index < num_params()) << "AdamW: parameter index " << index;
  return m_[static_cast<size_t>(index)];
}

Tensor& AdamW::v(int64_t index) {
  MF_CHECK(index >= 0 && index < num_params()) << "AdamW: parameter index " << index;
  return v_[static_cast<size_t>(index)];
}

const Tensor& AdamW::m(int64_t index) const { return const_cast<AdamW*>(this)->m(index); }
const Tensor& AdamW::v(int64_t index) const { return const_cast<AdamW*>(this)->v(index); }

}  // namespace moefold::optim
