// Minimal command-line parsing for the moefold subcommands: "--name value", "--name=value",
// repeatable options, and boolean flags. Unknown options are errors that name the option.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moefold::launch {

struct ArgSpec {
  std::set<std::string> options;     // take a value
  std::set<std::string> repeatable;  // take a value, may repeat
  std::set<std::string> flags;
  std::vector<std::string> command_line;  // "moefold <command>" and the arguments as given       // no value
};

struct ParsedArgs {
  std::map<std::string, std::string> values;
  std::map<std::string, std::vector<std::string>> lists;
  std::set<std::string> flags;
  std::vector<std::string> command_line;  // "moefold <command>" and the arguments as given
  bool Has(const std::string& name) const { return values.count(name) || flags.count(name); }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
};

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args, const ArgSpec& spec,
                                     const std::string& command);

}  // namespace moefold::launch
