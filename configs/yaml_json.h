// YAML → JSON text for protobuf's JSON parser (docs/ARCHITECTURE.md §7). Every key is kept, so the
// parser decides what is unknown (only camelCase spellings are refused here); key positions are
// recorded so errors can point at a line.
//
//   MF_ASSIGN_OR_RETURN(YamlJson doc, YamlToJson(text, "exp.yaml",
//   ExperimentConfig::descriptor()));
#pragma once

#include <map>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace moefold::config {

struct YamlJson {
  std::string json;
  // Dotted key path ("model.moe.top_k", "compression.rank_weights[1]") → (line, column), 1-based,
  // of the key (or of the sequence element) in the YAML text.
  std::map<std::string, std::pair<int, int>> positions;
};

// Converts one YAML document. Scalars: plain numbers (YAML 1.2 core: 12, -3.5e-4, .5, +1) become
// JSON numbers, true/false (any case) JSON booleans, .inf/.nan the strings "Infinity"/"NaN"
// (protobuf's spelling); everything else, and every quoted or !!str scalar, a JSON string. A scalar
// that lands on a string field of `schema` stays a string even when it looks like a number
// (`name: 2024`). Null values (`~`, `null`, nothing) are omitted from mappings, so the default
// stays. An empty document gives "{}". Returns InvalidArgument naming `source` and the line for a
// YAML syntax error, a duplicate key, a non-scalar key, or a top level that is not a mapping.
absl::StatusOr<YamlJson> YamlToJson(absl::string_view yaml, absl::string_view source,
                                    const google::protobuf::Descriptor* schema);

// `text` as a JSON string literal, quotes included (", \ and control characters escaped).
std::string JsonQuote(absl::string_view text);

// `text` rewritten as a JSON number when it is a YAML 1.2 core int or float ("+.5e3" → "0.5e3"),
// else "".
std::string JsonNumber(absl::string_view text);

}  // namespace moefold::config
