// Export: parameters → Hugging Face layout (hf_layout) → family names → dtype → shards, then the
// index and config.json last, so a directory with a config.json is complete.
#include "core/hf/export.h"

#include <filesystem>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "configs/moefold.pb.h"
#include "core/file_io.h"
#include "core/hf/safetensors.h"
#include "core/model/hf_layout.h"
#include "core/status.h"

namespace moefold::hf {
namespace {

// transformers refuses safetensors files whose metadata lacks a known format.
const std::map<std::string, std::string> kMetadata = {{"format", "pt"}};

}  // namespace

absl::StatusOr<Family> CheckExportable(const model::ModelSpec& spec, const ExportOptions& options) {
  return ChooseFamily(spec, options.family);
}

absl::Status ExportHuggingFace(const ParameterSet& full, const model::ModelSpec& spec,
                               const config::ExperimentConfig& config, const std::string& out_dir,
                               const ExportOptions& options) {
  MF_ASSIGN_OR_RETURN(const Family family, CheckExportable(spec, options));
  if (options.dtype != DType::kF32 && options.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("export dtype ", DTypeName(options.dtype), ": only f32 and bf16"));
  }
  if (options.max_shard_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_shard_bytes ", options.max_shard_bytes, " must be positive"));
  }
  std::map<std::string, Tensor> tensors;  // family name -> value in the export dtype
  auto put = [&](const std::string& name, const Tensor& f32) -> absl::Status {
    const std::string family_name = ToFamilyName(family, name);
    if (tensors.count(family_name) > 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", family_name, " twice"));
    }
    tensors[family_name] = options.dtype == DType::kF32 ? f32 : f32.To(options.dtype);
    return absl::OkStatus();
  };
  for (const auto& p : full.params()) {
    const Sharding& s = p->sharding;
    if (p->value.shape() != s.global_shape || s.expert_offset != 0 || s.tp_size != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter ", p->name, " is a shard ", p->value.DebugString(), " of global shape [",
                       absl::StrJoin(s.global_shape, ", "), "]: export takes the whole model on one rank"));
    }
    const Tensor value = p->value.To(Device::Cpu());
    for (const model::HfTensor& t : model::ToHuggingFace(p->name, value, spec)) {
      MF_RETURN_IF_ERROR(put(t.name, t.value));
    }
  }
  for (const auto& [name, value] : FamilyExtras(spec, family)) MF_RETURN_IF_ERROR(put(name, value));

  // Exactly the tensors the family's definition builds, with its shapes.
  const std::vector<std::pair<std::string, Shape>> expected = ExpectedTensors(spec, family);
  std::set<std::string> seen;
  for (const auto& [name, shape] : expected) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the parameters lack ", name, ", which ", Architecture(family), " needs (a pipeline stage's "
          "or a partial parameter set?)"));
    }
    if (it->second.shape() != shape) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is ", it->second.DebugString(), ", ",
                                                     Architecture(family), " needs [",
                                                     absl::StrJoin(shape, ", "), "]"));
    }
    seen.insert(name);
  }
  for (const auto& [name, value] : tensors) {
    if (seen.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter tensor ", name, " has no place in ", Architecture(family)));
    }
  }

  // Shards in model order (a layer's tensors stay together), each up to max_shard_bytes.
  std::vector<std::vector<std::string>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const auto& [name, shape] : expected) {
    const int64_t bytes = static_cast<int64_t>(tensors[name].nbytes());
    if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(name);
    shard_bytes += bytes;
    total += bytes;
  }
  std::error_code error;
  std::filesystem::create_directories(out_dir, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", error.message()));
  std::map<std::string, std::string> weight_map;
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file =
        shards.size() == 1 ? "model.safetensors"
                           : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    std::vector<std::pair<std::string, Tensor>> content;
    for (const std::string& name : shards[i]) {
      content.push_back({name, tensors[name]});
      weight_map[name] = file;
    }
    MF_RETURN_IF_ERROR(WriteSafetensors(absl::StrCat(out_dir, "/", file), content, kMetadata));
  }
  if (shards.size() > 1) MF_RETURN_IF_ERROR(WriteSafetensorsIndex(out_dir, weight_map, total));
  return WriteFileAtomically(absl::StrCat(out_dir, "/config.json"),
                             ConfigJson(spec, family, config.train().seq_len(), options.dtype));
}

}  // namespace moefold::hf
