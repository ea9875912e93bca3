// Schema look-ups shared by the YAML loader and the --set overrides: find a field of a config
// section by its snake_case name, and suggest the nearest name when a key is misspelt.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace moefold::config {

// The field of `section` named exactly `name` (the .proto spelling), or nullptr.
const google::protobuf::FieldDescriptor* FindConfigField(
    const google::protobuf::Descriptor& section, absl::string_view name);

// " (did you mean 'num_experts'?)" when a field of `section` is within edit distance 2 of `name`
// (or contains it / is contained in it), else "". Used to finish "unknown key" messages.
std::string DidYouMean(const google::protobuf::Descriptor& section, absl::string_view name);

// The message type reached by following the dotted path `section_path` ("model.moe") from `root`,
// or nullptr when a component is not a singular message field. "" gives root.
const google::protobuf::Descriptor* FindSection(const google::protobuf::Descriptor& root,
                                                absl::string_view section_path);

}  // namespace moefold::config
