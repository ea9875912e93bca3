// Import: config.json check, then per parameter its Hugging Face tensors (only this rank's
// experts), fused by hf_layout, cut to this rank's TP/ETP slice, staged; copied in only when every
// parameter has staged.
#include "core/hf/import.h"

#include <fstream>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "configs/moefold.pb.h"
#include "core/hf/family.h"
#include "core/hf/safetensors.h"
#include "core/model/hf_layout.h"
#include "core/status.h"

namespace moefold::hf {
namespace {

// Rows [begin, end) of dimension `dim` of a row-major CPU f32 tensor, as a new tensor.
Tensor SliceDim(const Tensor& t, int dim, int64_t begin, int64_t end) {
  Shape shape = t.shape();
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < dim; ++i) outer *= shape[i];
  for (size_t i = dim + 1; i < shape.size(); ++i) inner *= shape[i];
  const int64_t rows = shape[dim];
  shape[dim] = end - begin;
  Tensor out = Tensor::Empty(shape, DType::kF32);
  const float* src = t.data<float>();
  float* dst = out.data<float>();
  for (int64_t o = 0; o < outer; ++o) {
    std::copy_n(src + (o * rows + begin) * inner, (end - begin) * inner, dst + o * (end - begin) * inner);
  }
  return out;
}

// This rank's slice (TP/ETP along tp_dim) of `whole`, a tensor of the parameter's global shape
// (or one expert of it).
Tensor TpSlice(const Parameter& p, const Tensor& whole) {
  const Sharding& s = p.sharding;
  if (s.tp_dim < 0) return whole;
  return SliceDim(whole, s.tp_dim, s.tp_begin, s.tp_begin + p.value.dim(s.tp_dim));
}

// "...experts.0.gate_proj.weight" -> "...experts.<e>.gate_proj.weight".
std::string ForExpert(const std::string& name, int64_t expert) {
  const std::string zero = ".experts.0.";
  const size_t at = name.find(zero);
  if (at == std::string::npos) return name;
  return absl::StrCat(name.substr(0, at), ".experts.", expert, ".", name.substr(at + zero.size()));
}

// A layer index >= `layers` in a "model.layers.N." name (transformers ignores such MTP layers).
bool BeyondLayers(const std::string& name, int layers) {
  constexpr absl::string_view kPrefix = "model.layers.";
  if (!absl::StartsWith(name, kPrefix)) return false;
  const size_t dot = name.find('.', kPrefix.size());
  int layer = 0;
  return dot != std::string::npos &&
         absl::SimpleAtoi(name.substr(kPrefix.size(), dot - kPrefix.size()), &layer) && layer >= layers;
}

}  // namespace

absl::Status ImportHuggingFace(const std::string& hf_dir, const model::ModelSpec& spec,
                               const config::ExperimentConfig& config, ParameterSet* params) {
  const std::string config_path = absl::StrCat(hf_dir, "/config.json");
  std::ifstream in(config_path);
  if (!in) return absl::NotFoundError(absl::StrCat(config_path, ": cannot open (model.init_from)"));
  std::stringstream text;
  text << in.rdbuf();
  MF_ASSIGN_OR_RETURN(const Family family,
                      CheckConfigJson(config_path, text.str(), spec, config.train().seq_len()));
  MF_ASSIGN_OR_RETURN(SafetensorsDir dir, SafetensorsDir::Open(hf_dir));

  // Nothing in the directory that the model has no place for (a bias, a q/k norm, another layer
  // count would mean a different model than config.json says).
  std::map<std::string, Shape> expected;
  for (auto& [name, shape] : ExpectedTensors(spec, family)) expected[name] = std::move(shape);
  for (const std::string& name : dir.Names()) {
    if (expected.count(name) == 0 &&
        !(family == Family::kGlm4Moe && BeyondLayers(name, spec.num_layers))) {
      MF_ASSIGN_OR_RETURN(const std::string file, dir.FileOf(name));
      return absl::InvalidArgumentError(absl::StrCat(hf_dir, "/", file, ": tensor '", name, "' has no place in the ",
                                                     Architecture(family), " of the experiment"));
    }
  }

  // A tensor in moefold's Hugging Face layout, read under the family's name and widened to f32.
  auto lookup = [&](const std::string& name) -> absl::StatusOr<Tensor> {
    const std::string hf_name = ToFamilyName(family, name);
    MF_ASSIGN_OR_RETURN(const std::string file, dir.FileOf(hf_name));
    MF_ASSIGN_OR_RETURN(Tensor t, dir.Read(hf_name));
    if (t.dtype() != DType::kF32 && t.dtype() != DType::kBF16 && t.dtype() != DType::kF16) {
      return absl::InvalidArgumentError(absl::StrCat(hf_dir, "/", file, ": tensor '", hf_name, "' is ",
                                                     SafetensorsDTypeName(t.dtype()),
                                                     ", expected F32, BF16 or F16"));
    }
    const auto shape = expected.find(hf_name);
    if (shape != expected.end() && t.shape() != shape->second) {
      return absl::InvalidArgumentError(absl::StrCat(hf_dir, "/", file, ": tensor '", hf_name, "' has shape [",
                                                     absl::StrJoin(t.shape(), ", "), "], the experiment needs [",
                                                     absl::StrJoin(shape->second, ", "), "]"));
    }
    if (t.dtype() != DType::kF32) t = t.To(DType::kF32);
    return t;
  };

  std::vector<std::pair<Parameter*, Tensor>> staged;
  for (const auto& p : params->params()) {
    const Sharding& s = p->sharding;
    Tensor value = Tensor::Empty(p->value.shape(), DType::kF32);
    absl::Status status;
    if (s.expert_dim == 0) {
      // One expert at a time: its global tensor is the stacked shape with one expert.
      Shape one = s.global_shape;
      one[0] = 1;
      const int64_t per_expert = value.numel() / std::max<int64_t>(1, value.dim(0));
      for (int64_t j = 0; j < value.dim(0) && status.ok(); ++j) {
        const int64_t e = s.expert_offset + j;
        absl::StatusOr<Tensor> whole = model::FromHuggingFace(
            p->name, one, spec, [&](const std::string& n) { return lookup(ForExpert(n, e)); });
        if (!whole.ok()) {
          status = Annotate(whole.status(), absl::StrCat("moefold parameter ", p->name, " expert ", e));
          break;
        }
        const Tensor slice = TpSlice(*p, *whole);
        std::copy_n(slice.data<float>(), per_expert, value.data<float>() + j * per_expert);
      }
    } else {
      absl::StatusOr<Tensor> whole = model::FromHuggingFace(p->name, s.global_shape, spec, lookup);
      if (whole.ok()) {
        value = TpSlice(*p, *whole);
      } else {
        status = Annotate(whole.status(), absl::StrCat("moefold parameter ", p->name));
      }
    }
    MF_RETURN_IF_ERROR(status);
    MF_CHECK(value.shape() == p->value.shape()) << p->name << ": " << value.DebugString();
    // GLM-4-MoE's selection bias must be zero: moefold's routing has none in its weights.
    if (family == Family::kGlm4Moe && absl::EndsWith(p->name, ".mlp.gate.weight")) {
      const std::string bias = absl::StrCat(p->name.substr(0, p->name.size() - 6), "e_score_correction_bias");
      if (dir.Contains(bias)) {
        MF_ASSIGN_OR_RETURN(const Tensor b, lookup(bias));
        for (float x : b.ToVector()) {
          if (x != 0.0f) {
            return absl::InvalidArgumentError(absl::StrCat(
                hf_dir, ": tensor '", bias, "' is not zero; moefold's routing has no bias in its weights"));
          }
        }
      }
    }
    staged.push_back({p.get(), std::move(value)});
  }
  for (auto& [p, value] : staged) p->value.CopyFrom(value);
  return absl::OkStatus();
}

}  // namespace moefold::hf
