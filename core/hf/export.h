// Hugging Face export: a whole (one-rank, unsharded) model as config.json + safetensors in the
// naming of a transformers family (core/hf/family.h). Invariant: f32 export is bit-identical to
// the master weights, bf16 export is each master weight rounded to nearest even (core/dtype.h),
// and every tensor the family's definition expects is written, nothing else.
//
//   ExportOptions options{.dtype = DType::kBF16};
//   MF_RETURN_IF_ERROR(ExportHuggingFace(params, spec, config, "out/hf", options));
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/hf/family.h"
#include "core/model/model_spec.h"
#include "core/parameter.h"

namespace moefold::config {
class ExperimentConfig;
}

namespace moefold::hf {

struct ExportOptions {
  DType dtype = DType::kF32;  // kF32 or kBF16
  // Above this many bytes of tensor data, model-00001-of-0000N.safetensors shards and
  // model.safetensors.index.json; one tensor larger than it gets a shard of its own.
  int64_t max_shard_bytes = 5'000'000'000;
  std::string family = "auto";  // "auto", "mixtral", "qwen2_moe", "glm4_moe"
};

// OK with the family `options.family` resolves to when `spec` can be exported, else
// InvalidArgument naming every setting that no (or not the named) family represents.
absl::StatusOr<Family> CheckExportable(const model::ModelSpec& spec, const ExportOptions& options);

// Writes `out_dir`/config.json and the weights (out_dir is created if missing; files are written
// through tmp names, fsynced and renamed). `full` holds every parameter of the model unsharded, as
// one rank of a one-rank layout does (CPU or GPU values). max_position_embeddings =
// config.train().seq_len(). Status: CheckExportable's refusal; InvalidArgument for a sharded,
// missing or unexpected parameter (named) or a dtype other than f32/bf16; Internal for I/O.
absl::Status ExportHuggingFace(const ParameterSet& full, const model::ModelSpec& spec,
                               const config::ExperimentConfig& config, const std::string& out_dir,
                               const ExportOptions& options);

}  // namespace moefold::hf
