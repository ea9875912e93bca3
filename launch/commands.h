// The moefold subcommands. Each returns the process exit code and prints its own errors.
#pragma once

#include <string>
#include <vector>

namespace moefold::launch {

int TrainCommand(const std::vector<std::string>& args);
int PlanCommand(const std::vector<std::string>& args);
int PrepDataCommand(const std::vector<std::string>& args);
int ExportCommand(const std::vector<std::string>& args);
int ReportCommand(const std::vector<std::string>& args);
int LaunchCommand(const std::vector<std::string>& args);

// Prints "moefold <command>: <message>" to stderr and returns 1 (2 for usage errors).
int Fail(const std::string& command, const std::string& message, int code = 1);

}  // namespace moefold::launch
