// Hugging Face import: fills a rank's parameters — any layout, each parameter its slice of the
// global tensor (core/parameter.h Sharding) — from a directory exported by moefold or by
// transformers (config.json + model.safetensors or shards + index). Invariant: all or nothing; a
// rank reads only the tensors its slices need (a rank holding experts 4..7 reads only those).
//
//   if (!config.model().init_from().empty())
//     MF_RETURN_IF_ERROR(hf::ImportHuggingFace(config.model().init_from(), spec, config, &params));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "core/model/model_spec.h"
#include "core/parameter.h"

namespace moefold::config {
class ExperimentConfig;
}

namespace moefold::hf {

// Checks hf_dir/config.json against the experiment (`spec` = the model section as ModelSpec, from
// which it is derived in core/train; max_position_embeddings against config.train().seq_len()),
// then sets every parameter of `params` to its slice of the Hugging Face weights, in f32 (BF16 and
// F16 files widen exactly). Call before ParameterSet::Flatten (the values are copied into each
// parameter's own tensor). Status, naming the file and the tensor: InvalidArgument for a
// config.json field that disagrees (both values named), a tensor of the wrong shape or dtype, or a
// tensor the model has no place for; NotFound for a missing file or tensor; errors of the
// safetensors reader. On error no parameter has changed.
absl::Status ImportHuggingFace(const std::string& hf_dir, const model::ModelSpec& spec,
                               const config::ExperimentConfig& config, ParameterSet* params);

}  // namespace moefold::hf
