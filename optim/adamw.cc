// AdamW over a ParameterSet (see adamw.h): per-parameter state and one ops::AdamWStep call each, or
// in flat mode flat moments and one ops::AdamWFlatStep per flat buffer.
#include "optim/adamw.h"

#include <algorithm>
#include <unordered_map>

#include "core/status.h"

namespace moefold::optim {

ops::AdamWOptions StepOptions(const AdamWOptions& options, float lr, int64_t step) {
  ops::AdamWOptions step_options;
  step_options.lr = lr;
  step_options.beta1 = options.beta1;
  step_options.beta2 = options.beta2;
  step_options.eps = options.eps;
  step_options.weight_decay = options.weight_decay;
  step_options.step = step;
  return step_options;
}

Tensor NoDecayRanges(const FlatBuffer& buffer, int64_t begin, int64_t end) {
  MF_CHECK(0 <= begin && begin <= end) << "NoDecayRanges: [" << begin << ", " << end << ")";
  std::vector<int64_t> bounds;  // begin0, end0, begin1, end1, ...
  for (const FlatSegment& seg : buffer.segments) {
    if (seg.param->weight_decay) continue;
    const int64_t a = std::max(begin, seg.offset), b = std::min(end, seg.offset + seg.numel);
    if (a >= b) continue;
    if (!bounds.empty() && bounds.back() == a - begin) {
      bounds.back() = b - begin;  // adjacent to the previous range: extend it
    } else {
      bounds.push_back(a - begin);
      bounds.push_back(b - begin);
    }
  }
  const int64_t count = static_cast<int64_t>(bounds.size()) / 2;
  Tensor ranges = Tensor::Empty({count, 2}, DType::kI64);
  std::copy(bounds.begin(), bounds.end(), ranges.data<int64_t>());
  return ranges;
}

AdamW::AdamW(ParameterSet* params, const AdamWOptions& options) : set_(params), options_(options) {
  MF_CHECK(params != nullptr) << "AdamW: null ParameterSet";
  params_.reserve(params->params().size());
  for (const auto& p : params->params()) params_.push_back(p.get());
  const Device device = params_.empty() ? Device::Cpu() : params_.front()->value.device();
  no_ranges_ = Tensor::Empty({0, 2}, DType::kI64, device);
  if (params->flat_buffers().empty()) {
    for (Parameter* p : params_) {
      m_.push_back(Tensor::Zeros(p->value.shape(), DType::kF32, p->value.device()));
      v_.push_back(Tensor::Zeros(p->value.shape(), DType::kF32, p->value.device()));
    }
    return;
  }
  std::unordered_map<const Parameter*, size_t> index;
  for (size_t i = 0; i < params_.size(); ++i) index[params_[i]] = i;
  m_.resize(params_.size());
  v_.resize(params_.size());
  for (const FlatBuffer& buffer : params->flat_buffers()) {
    const Device dev = buffer.values.device();
    FlatState state{Tensor::Zeros(buffer.values.shape(), DType::kF32, dev),
                    Tensor::Zeros(buffer.values.shape(), DType::kF32, dev),
                    NoDecayRanges(buffer, 0, buffer.values.numel()).To(dev)};
    for (const FlatSegment& seg : buffer.segments) {
      const size_t i = index.at(seg.param);
      const Shape shape = seg.param->value.shape();
      m_[i] = state.m.Slice(seg.offset, seg.offset + seg.numel).Reshape(shape);
      v_[i] = state.v.Slice(seg.offset, seg.offset + seg.numel).Reshape(shape);
    }
    flat_.push_back(std::move(state));
  }
}

void AdamW::Step(float lr, Stream& stream) {
  MF_CHECK_EQ(set_->params().size(), params_.size())
      << "AdamW: parameters were added to the set after the optimizer was created";
  ++step_count_;
  ops::AdamWOptions step_options = StepOptions(options_, lr, step_count_);
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter* p = params_[i];
    step_options.weight_decay = p->weight_decay ? options_.weight_decay : 0.0f;
    ops::AdamWStep(step_options, p->grad, &p->value, &m_[i], &v_[i], stream);
  }
}

void AdamW::Step(float lr, const Tensor& grad_scale, Stream& stream) {
  MF_CHECK_EQ(set_->params().size(), params_.size())
      << "AdamW: parameters were added to the set after the optimizer was created";
  ++step_count_;
  ops::AdamWOptions step_options = StepOptions(options_, lr, step_count_);
  if (flat()) {
    std::vector<FlatBuffer>& buffers = set_->flat_buffers();
    MF_CHECK_EQ(buffers.size(), flat_.size()) << "AdamW: the set's flat buffers changed";
    for (size_t b = 0; b < flat_.size(); ++b) {
      FlatBuffer& buffer = buffers[b];
      // In f32 the compute copy is the values themselves.
      Tensor* compute = buffer.compute.dtype() == DType::kF32 ? nullptr : &buffer.compute;
      ops::AdamWFlatStep(step_options, buffer.grads, grad_scale, flat_[b].no_decay_ranges,
                         &buffer.values, &flat_[b].m, &flat_[b].v, compute, stream);
    }
    return;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter* p = params_[i];
    step_options.weight_decay = p->weight_decay ? options_.weight_decay : 0.0f;
    Tensor* compute =
        p->compute.defined() && p->compute.dtype() != DType::kF32 ? &p->compute : nullptr;
    ops::AdamWFlatStep(step_options, p->grad, grad_scale, no_ranges_, &p->value, &m_[i], &v_[i],
                       compute, stream);
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
