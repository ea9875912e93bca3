// Runs a shell command line for the tests that drive the binaries (moefold, mpirun): its exit code
// and its output, stdout and stderr together.
#pragma once

#include <string>

namespace moefold::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when it could not run or did not exit normally
  std::string output;
};

CommandResult RunCommand(const std::string& command_line);

}  // namespace moefold::testing
