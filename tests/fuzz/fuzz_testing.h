// Shared by the fuzz tests: how many inputs (MOEFOLD_FUZZ_ITERATIONS, default 10000), a scratch
// directory, whole-file I/O and the tally every harness prints.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"

namespace moefold::fuzz {

inline int Iterations() {
  const char* text = std::getenv("MOEFOLD_FUZZ_ITERATIONS");
  const int n = text == nullptr ? 10000 : std::atoi(text);
  return n > 0 ? n : 10000;
}

inline std::string ScratchDir(const std::string& name) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("moefold-fuzz-" + name + "-" + std::to_string(getpid())))
                              .string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Inputs accepted and refused; a refusal must say why.
struct Tally {
  int64_t accepted = 0, refused = 0, silent_errors = 0;
  void Count(const absl::Status& status) {
    if (status.ok()) {
      ++accepted;
    } else {
      ++refused;
      if (status.message().empty()) ++silent_errors;
    }
  }
  void Print(const char* harness) const {
    std::printf("fuzz %s: %lld inputs, %lld accepted, %lld refused with an error\n", harness,
                static_cast<long long>(accepted + refused), static_cast<long long>(accepted),
                static_cast<long long>(refused));
  }
};

}  // namespace moefold::fuzz
