#include "tests/testing/run_command.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>

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

std::string MpirunPrefix(int ranks) {
  return std::string(MPIEXEC) + " --allow-run-as-root --oversubscribe -np " +
         std::to_string(ranks) + " ";
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string JsonNumberText(const std::string& line, const std::string& key) {
  const std::string tag = "\"" + key + "\": ";
  const size_t at = line.find(tag);
  if (at == std::string::npos) return "<no " + key + ">";
  const size_t begin = at + tag.size();
  return line.substr(begin, line.find_first_of(",}", begin) - begin);
}

}  // namespace moefold::testing
