// Parameter bookkeeping and layout-independent initialisation.
#include "core/parameter.h"

#include "absl/strings/str_cat.h"
#include "core/philox.h"

namespace moefold {

absl::string_view GradReductionName(GradReduction reduction) {
  switch (reduction) {
    case GradReduction::kDenseDataCp: return "dp-cp";
    case GradReduction::kDenseDataCpTp: return "dp-cp+tp";
    case GradReduction::kExpertData: return "edp";
  }
  return "?";
}

std::string Parameter::ExpertName(int64_t expert) const {
  const std::string marker = ".experts.";
  const size_t at = name.find(marker);
  MF_CHECK(at != std::string::npos) << name << " is not an expert tensor";
  return absl::StrCat(name.substr(0, at + marker.size()), expert, ".",
                      name.substr(at + marker.size()));
}

uint64_t HashName(absl::string_view name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

Parameter* ParameterSet::Add(std::string name, const Shape& shape, GradReduction reduction,
                             float init_std, bool weight_decay, float init_value) {
  MF_CHECK(Find(name) == nullptr) << "duplicate parameter " << name;
  auto p = std::make_unique<Parameter>();
  p->name = std::move(name);
  p->value = Tensor::Zeros(shape, DType::kF32);
  p->grad = Tensor::Zeros(shape, DType::kF32);
  p->reduction = reduction;
  p->init_std = init_std;
  p->init_value = init_value;
  p->weight_decay = weight_decay;
  params_.push_back(std::move(p));
  return params_.back().get();
}

void ParameterSet::Initialize(uint64_t seed) {
  for (auto& p : params_) {
    float* v = p->value.data<float>();
    if (p->init_std == 0.0f) {
      p->value.Fill(p->init_value);
      continue;
    }
    // Stacked expert tensors draw each expert from its global name, so EP sharding keeps values.
    if (p->sharding.expert_dim == 0) {
      const int64_t per_expert = p->value.numel() / p->value.dim(0);
      for (int64_t e = 0; e < p->value.dim(0); ++e) {
        PhiloxStream rng(seed, HashName(p->ExpertName(p->sharding.expert_offset + e)));
        for (int64_t i = 0; i < per_expert; ++i) v[e * per_expert + i] = p->init_std * rng.Normal();
      }
      continue;
    }
    PhiloxStream rng(seed, HashName(p->name));
    for (int64_t i = 0; i < p->value.numel(); ++i) v[i] = p->init_std * rng.Normal();
  }
}

void ParameterSet::ZeroGrads() {
  if (!flat_.empty()) {
    for (FlatBuffer& b : flat_) b.grads.SetZero();
    return;
  }
  for (auto& p : params_) p->grad.SetZero();
}

int64_t ParameterSet::NumElements() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p->value.numel();
  return n;
}

DataGroup DataGroupOf(GradReduction reduction) {
  return reduction == GradReduction::kExpertData ? DataGroup::kExpert : DataGroup::kDense;
}

std::vector<FlatBuffer>& ParameterSet::Flatten(int64_t align) {
  MF_CHECK(flat_.empty()) << "parameters are already flattened";
  MF_CHECK_GE(align, 1);
  for (DataGroup group : {DataGroup::kDense, DataGroup::kExpert}) {
    FlatBuffer buffer;
    buffer.group = group;
    for (auto& p : params_) {
      if (DataGroupOf(p->reduction) != group) continue;
      buffer.segments.push_back({p.get(), buffer.used, p->value.numel()});
      buffer.used += p->value.numel();
    }
    if (buffer.segments.empty()) continue;
    const int64_t padded = (buffer.used + align - 1) / align * align;
    buffer.values = Tensor::Zeros({padded}, DType::kF32);
    buffer.grads = Tensor::Zeros({padded}, DType::kF32);
    for (const FlatSegment& seg : buffer.segments) {
      Parameter* p = seg.param;
      const Shape shape = p->value.shape();
      Tensor value = buffer.values.Slice(seg.offset, seg.offset + seg.numel).Reshape(shape);
      Tensor grad = buffer.grads.Slice(seg.offset, seg.offset + seg.numel).Reshape(shape);
      value.CopyFrom(p->value);
      grad.CopyFrom(p->grad);
      p->value = value;
      p->grad = grad;
    }
    flat_.push_back(std::move(buffer));
  }
  return flat_;
}

Parameter* ParameterSet::Find(absl::string_view name) const {
  for (const auto& p : params_) {
    if (p->name == name) return p.get();
  }
  return nullptr;
}

}  // namespace moefold
