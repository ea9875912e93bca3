// Loading an experiment: YAML file → JSON → protobuf (unknown keys are errors) → merged over
// DefaultConfig() → `--set` overrides by dotted path. ConfigToYaml prints the effective config.
//
//   MF_ASSIGN_OR_RETURN(config::ExperimentConfig c,
//                       config::LoadConfigFile("configs/tiny_moe.yaml", {"train.steps=10"}));
//   MF_RETURN_IF_ERROR(config::Validate(c, world_size));           // configs/validate.h
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "configs/moefold.pb.h"

namespace moefold::config {

// Reads `path`, parses it like ParseConfigYaml, then applies each override ("train.steps=10", in
// order; later ones win) before the defaults are filled in, so an override counts as set by the
// experiment. NotFound when the file cannot be read; InvalidArgument (naming the file, line and
// key, or the override) for everything else.
absl::StatusOr<ExperimentConfig> LoadConfigFile(const std::string& path,
                                                const std::vector<std::string>& overrides);

// Parses YAML text (`source` names it in errors) into the effective config: every field the text
// sets (an explicit 0 or false included) replaces the default of DefaultConfig(). One derived
// default: optimizer.warmup_steps, when not set, is DefaultWarmupSteps(train.steps) = 10% of the
// steps. InvalidArgument "SOURCE:LINE:COL: ..." for a YAML syntax error, a duplicate key, an
// unknown key
// ("unknown key 'model.moe.num_expert' (did you mean 'num_experts'?)") or a value of the wrong type
// ("bad value for 'model.hidden_size': invalid value \"big\" for type TYPE_INT32").
absl::StatusOr<ExperimentConfig> ParseConfigYaml(absl::string_view yaml, absl::string_view source);

// Sets one field by dotted path: "model.moe.top_k=4", "train.device=cuda", "parallel.zero1=true",
// "compression.rank_weights=0.5,0.25,0.25" (repeated float, comma-separated; empty clears).
// Field kinds: int32/int64/uint32/uint64 (decimal, range-checked), float/double, bool (true/false,
// yes/no, 1/0), string (surrounding quotes removed), enum (by value name).
// InvalidArgument naming the path for a missing '=', an unknown field (with a suggestion), a path
// through a non-section, a section as the target, or a value that does not parse as the field's
// type; `config` is unchanged on error.
absl::Status ApplyOverride(ExperimentConfig* config, absl::string_view assignment);

// The config as YAML, sections and fields in schema order, only fields that are set; strings
// quoted, floats in shortest round-trip form. ParseConfigYaml(ConfigToYaml(c), ...) gives c back.
std::string ConfigToYaml(const ExperimentConfig& config);

}  // namespace moefold::config
