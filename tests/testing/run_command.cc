#include "tests/testing/run_command.h"

#include <sys/wait.h>

#include <cstdio>

namespace moefold::testing {

CommandResult RunCommand(const std::string& command_line) {
  CommandResult r;
  FILE* pipe = popen((command_line + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) r.output += buffer;
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace moefold::testing
