// The one command-line parser of moefold's subcommands and the benchmark tools: "--name value",
// "--name=value", repeatable options, boolean flags and up to `max_positionals` bare arguments.
// Unknown options are errors that name the option (the caller prefixes the program).
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
  std::set<std::string> flags;       // no value
  int max_positionals = 0;           // bare arguments allowed (e.g. `moefold report RUN_DIR`)
  std::string program = "moefold";   // the first word of ParsedArgs::command_line
};

struct ParsedArgs {
  std::map<std::string, std::string> values;
  std::map<std::string, std::vector<std::string>> lists;
  std::set<std::string> flags;
  std::vector<std::string> positionals;
  std::vector<std::string> command_line;  // "moefold <command>" and the arguments as given
  bool Has(const std::string& name) const { return values.count(name) || flags.count(name); }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
};

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args, const ArgSpec& spec,
                                     const std::string& command);

}  // namespace moefold::launch
