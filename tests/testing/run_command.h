// Helpers for the tests that drive the binaries (moefold, mpirun) and read what a run wrote:
// running a command line, the mpirun prefix, a file's lines and a number's text in a JSON line.
#pragma once

#include <string>
#include <vector>

namespace moefold::testing {

struct CommandResult {
  int exit_code = -1;  // -1 when it could not run or did not exit normally
  std::string output;  // stdout and stderr together
};

CommandResult RunCommand(const std::string& command_line);

// "<mpiexec> --allow-run-as-root --oversubscribe -np <ranks> " (the configured MPI launcher; the
// tests run as root in CI containers and may ask for more ranks than cores).
std::string MpirunPrefix(int ranks);

// The lines of a text file (none when it cannot be read).
std::vector<std::string> ReadLines(const std::string& path);

// The text of a number in a flat JSON line ("loss": 5.58...), or "<no KEY>": equal text is the
// equal double, as moefold prints the shortest representation that reads back exactly.
std::string JsonNumberText(const std::string& line, const std::string& key);

}  // namespace moefold::testing
