// Splitting and fusing the QKV and gate/up projections by plain row copies (CPU, f32).
#include "core/model/hf_layout.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/parameter.h"

namespace moefold::model {
namespace {

constexpr absl::string_view kQkv = "self_attn.qkv_proj.weight";
constexpr absl::string_view kGateUp = "gate_up_proj.weight";

// `name` with its last occurrence of `from` replaced by `to`.
std::string Renamed(const std::string& name, absl::string_view from, absl::string_view to) {
  const size_t at = absl::string_view(name).rfind(from);
  MF_CHECK(at != absl::string_view::npos) << name << " has no " << from;
  return absl::StrCat(name.substr(0, at), to, name.substr(at + from.size()));
}

// Row block [row, row + rows) of a row-major (·, cols) tensor, copied to `dst` at dst_row.
void CopyRows(const Tensor& src, int64_t row, int64_t rows, int64_t cols, Tensor* dst,
              int64_t dst_row) {
  std::copy_n(src.data<float>() + row * cols, rows * cols, dst->data<float>() + dst_row * cols);
}

struct QkvDims {
  int64_t groups, per_group, head_dim, hidden;  // G, r, D, H
};
QkvDims Dims(const ModelSpec& spec) {
  return {spec.num_kv_heads, spec.num_heads / spec.num_kv_heads, spec.head_dim, spec.hidden};
}

// For each of the fused tensor's row blocks in order: (which output, its row in that output).
// QKV: per group g, r query blocks (q rows (g·r + i)·D), one key block (k rows g·D), one value
// block (v rows g·D), each D rows.
template <typename F>
void ForEachQkvBlock(const QkvDims& d, F f) {
  for (int64_t g = 0; g < d.groups; ++g) {
    for (int64_t i = 0; i < d.per_group; ++i) f(0, (g * d.per_group + i) * d.head_dim);
    f(1, g * d.head_dim);
    f(2, g * d.head_dim);
  }
}

}  // namespace

std::vector<HfTensor> ToHuggingFace(const std::string& name, const Tensor& value,
                                    const ModelSpec& spec) {
  MF_CHECK(value.device().is_cpu() && value.dtype() == DType::kF32) << name << ": CPU f32 only";
  if (absl::EndsWith(name, kQkv)) {
    const QkvDims d = Dims(spec);
    MF_CHECK(value.shape() == Shape({d.groups, (d.per_group + 2) * d.head_dim, d.hidden}))
        << name << ": " << value.DebugString();
    std::vector<HfTensor> out = {
        {Renamed(name, kQkv, "self_attn.q_proj.weight"),
         Tensor::Empty({d.groups * d.per_group * d.head_dim, d.hidden}, DType::kF32)},
        {Renamed(name, kQkv, "self_attn.k_proj.weight"),
         Tensor::Empty({d.groups * d.head_dim, d.hidden}, DType::kF32)},
        {Renamed(name, kQkv, "self_attn.v_proj.weight"),
         Tensor::Empty({d.groups * d.head_dim, d.hidden}, DType::kF32)}};
    int64_t row = 0;
    ForEachQkvBlock(d, [&](int which, int64_t dst_row) {
      CopyRows(value, row, d.head_dim, d.hidden, &out[which].value, dst_row);
      row += d.head_dim;
    });
    return out;
  }
  if (absl::EndsWith(name, kGateUp)) {
    const bool experts = absl::StrContains(name, ".experts.");
    MF_CHECK(value.rank() == (experts ? 4 : 3) && value.dim(experts ? 1 : 0) == 2)
        << name << ": " << value.DebugString();
    const int64_t n = experts ? value.dim(0) : 1;
    const int64_t half = value.numel() / n / 2;  // F·H
    const Shape shape = {value.dim(experts ? 2 : 1), value.dim(experts ? 3 : 2)};
    std::vector<HfTensor> out;
    for (int64_t e = 0; e < n; ++e) {
      for (int part = 0; part < 2; ++part) {
        std::string hf = Renamed(name, kGateUp, part == 0 ? "gate_proj.weight" : "up_proj.weight");
        if (experts) hf = ExpertTensorName(hf, e);
        Tensor t = Tensor::Empty(shape, DType::kF32);
        std::copy_n(value.data<float>() + (2 * e + part) * half, half, t.data<float>());
        out.push_back({std::move(hf), std::move(t)});
      }
    }
    return out;
  }
  if (absl::StrContains(name, ".experts.")) {
    std::vector<HfTensor> out;
    const int64_t per_expert = value.numel() / value.dim(0);
    const Shape shape(value.shape().begin() + 1, value.shape().end());
    for (int64_t e = 0; e < value.dim(0); ++e) {
      Tensor t = Tensor::Empty(shape, DType::kF32);
      std::copy_n(value.data<float>() + e * per_expert, per_expert, t.data<float>());
      out.push_back({ExpertTensorName(name, e), std::move(t)});
    }
    return out;
  }
  return {{name, value}};
}

absl::StatusOr<Tensor> FromHuggingFace(
    const std::string& name, const Shape& shape, const ModelSpec& spec,
    const std::function<absl::StatusOr<Tensor>(const std::string&)>& lookup) {
  // The expected shape of every Hugging Face tensor is that of the split of a tensor of `shape`;
  // splitting a zero tensor names them and gives their shapes.
  const std::vector<HfTensor> parts = ToHuggingFace(name, Tensor::Zeros(shape, DType::kF32), spec);
  std::vector<Tensor> values;
  for (const HfTensor& part : parts) {
    MF_ASSIGN_OR_RETURN(Tensor t, lookup(part.name));
    if (t.shape() != part.value.shape()) {
      return absl::InvalidArgumentError(absl::StrCat("Hugging Face tensor ", part.name, " is ",
                                                     t.DebugString(), ", expected shape of ",
                                                     part.value.DebugString(), " for ", name));
    }
    values.push_back(t.device().is_cpu() && t.dtype() == DType::kF32
                         ? t
                         : t.To(Device::Cpu()).To(DType::kF32));
  }
  Tensor out = Tensor::Empty(shape, DType::kF32);
  if (absl::EndsWith(name, kQkv)) {
    const QkvDims d = Dims(spec);
    int64_t row = 0;
    ForEachQkvBlock(d, [&](int which, int64_t src_row) {
      CopyRows(values[which], src_row, d.head_dim, d.hidden, &out, row);
      row += d.head_dim;
    });
    return out;
  }
  // Everything else is the parts laid end to end (gate, up per expert; experts in order).
  int64_t at = 0;
  for (const Tensor& v : values) {
    std::copy_n(v.data<float>(), v.numel(), out.data<float>() + at);
    at += v.numel();
  }
  return out;
}

}  // namespace moefold::model
