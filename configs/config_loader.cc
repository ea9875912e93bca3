// YAML file → ExperimentConfig: yaml-cpp, then protobuf's JSON parser (unknown fields refused),
// then the defaults. Protobuf's error text is mapped back to the YAML key and its line here.
#include "configs/config_loader.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "configs/config_defaults.h"
#include "configs/field_lookup.h"
#include "configs/yaml_json.h"
#include "core/status.h"
#include "google/protobuf/util/json_util.h"

namespace moefold::config {
namespace {

std::string Where(absl::string_view source, const YamlJson& doc, const std::string& key) {
  auto it = doc.positions.find(key);
  if (it == doc.positions.end()) return std::string(source);
  return absl::StrCat(source, ":", it->second.first, ":", it->second.second);
}

// Protobuf 3.21 reports "(model.moe) num_expert: Cannot find field." for an unknown key,
// "(model.hidden_size): invalid value \"x\" for type TYPE_INT32" for a bad value and
// "(model) hidden_size: Proto field is not repeating, cannot start list." for a list where a scalar
// belongs. All become "SOURCE:LINE:COL: ..." naming the full dotted key; anything else keeps
// protobuf's text after the file name.
absl::Status ExplainJsonError(absl::string_view message, absl::string_view source,
                              const YamlJson& doc) {
  std::string path;
  absl::string_view rest = message;
  if (absl::StartsWith(rest, "(")) {
    const size_t close = rest.find(')');
    if (close != absl::string_view::npos) {
      path = std::string(rest.substr(1, close - 1));
      rest.remove_prefix(close + 1);
    }
  }
  rest = absl::StripLeadingAsciiWhitespace(rest);
  const size_t colon = rest.find(": ");
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
  }
  const absl::string_view name = rest.substr(0, colon);
  const absl::string_view detail = rest.substr(colon + 2);
  if (name.find(' ') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
  }
  const std::string key =
      name.empty() ? path : (path.empty() ? std::string(name) : absl::StrCat(path, ".", name));
  const google::protobuf::Descriptor& root = *ExperimentConfig::descriptor();
  if (detail == "Cannot find field.") {
    const google::protobuf::Descriptor* section = FindSection(root, path);
    return absl::InvalidArgumentError(
        absl::StrCat(Where(source, doc, key), ": unknown key '", key, "'",
                     section != nullptr ? DidYouMean(*section, name) : "",
                     path.empty() ? " (sections: model, parallel, train, optimizer, precision, "
                                    "memory, compression, reweighting, data, logging, checkpoint, "
                                    "name)"
                                  : ""));
  }
  std::string explained(detail);
  // A scalar or list where a section (mapping) belongs.
  if (key.find('[') == std::string::npos && !key.empty() && FindSection(root, key) != nullptr) {
    explained = "this is a section: give it a mapping of keys, not a value";
  }
  return absl::InvalidArgumentError(
      absl::StrCat(Where(source, doc, key), ": bad value for '", key, "': ", explained));
}

// The keys the YAML text sets, without defaults (presence intact).
absl::StatusOr<ExperimentConfig> ParseSparse(absl::string_view yaml, absl::string_view source) {
  MF_ASSIGN_OR_RETURN(YamlJson doc, YamlToJson(yaml, source, ExperimentConfig::descriptor()));
  ExperimentConfig parsed;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  // Protobuf 3.21 returns its own util::Status type, not absl::Status.
  const auto status = google::protobuf::util::JsonStringToMessage(doc.json, &parsed, options);
  if (!status.ok()) {
    const std::string message(status.message());
    return ExplainJsonError(message, source, doc);
  }
  return parsed;
}

// DefaultConfig() with every field `explicit_config` sets replacing the default.
ExperimentConfig WithDefaults(const ExperimentConfig& explicit_config) {
  ExperimentConfig config = DefaultConfig();
  config.MergeFrom(explicit_config);
  if (!explicit_config.optimizer().has_warmup_steps()) {
    config.mutable_optimizer()->set_warmup_steps(DefaultWarmupSteps(config.train().steps()));
  }
  return config;
}

}  // namespace

absl::StatusOr<ExperimentConfig> ParseConfigYaml(absl::string_view yaml, absl::string_view source) {
  MF_ASSIGN_OR_RETURN(ExperimentConfig parsed, ParseSparse(yaml, source));
  return WithDefaults(parsed);
}

absl::StatusOr<ExperimentConfig> LoadConfigFile(const std::string& path,
                                                const std::vector<std::string>& overrides) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return absl::NotFoundError(
        absl::StrCat("cannot read config file '", path, "': no such file (or not a regular file)"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) {
    return absl::NotFoundError(
        absl::StrCat("cannot read config file '", path, "': ", std::strerror(errno)));
  }
  MF_ASSIGN_OR_RETURN(ExperimentConfig parsed, ParseSparse(text.str(), path));
  for (const std::string& assignment : overrides) {
    MF_RETURN_IF_ERROR(ApplyOverride(&parsed, assignment));
  }
  return WithDefaults(parsed);
}

}  // namespace moefold::config
