// Command-line parsing.
#include "launch/args.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "launch/commands.h"

namespace moefold::launch {

int Fail(const std::string& command, const std::string& message, int code) {
  std::fprintf(stderr, "moefold %s: %s\n", command.c_str(), message.c_str());
  return code;
}

std::string ParsedArgs::Get(const std::string& name, const std::string& fallback) const {
  auto it = values.find(name);
  return it == values.end() ? fallback : it->second;
}

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args, const ArgSpec& spec,
                                     const std::string& command) {
  ParsedArgs parsed;
  parsed.command_line = {spec.program};
  if (!command.empty()) parsed.command_line.push_back(command);
  parsed.command_line.insert(parsed.command_line.end(), args.begin(), args.end());
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0) {
      if (static_cast<int>(parsed.positionals.size()) < spec.max_positionals) {
        parsed.positionals.push_back(arg);
        continue;
      }
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "' (see --help)"));
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (spec.flags.count(name)) {
      if (has_value) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " takes no value"));
      }
      parsed.flags.insert(name);
      continue;
    }
    const bool repeat = spec.repeatable.count(name) > 0;
    if (!repeat && !spec.options.count(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown option --", name, " (see --help)"));
    }
    if (!has_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (repeat) {
      parsed.lists[name].push_back(value);
    } else {
      parsed.values[name] = value;
    }
  }
  return parsed;
}

}  // namespace moefold::launch
