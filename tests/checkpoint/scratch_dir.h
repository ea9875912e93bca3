// A fresh, empty directory for one test (under the system's temp directory, named after the test
// and the process so parallel ctest runs never share one), removed with everything in it at the end.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

namespace moefold::checkpoint {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_((std::filesystem::temp_directory_path() /
               ("moefold-ckpt-" + name + "-" + std::to_string(::getpid())))
                  .string()) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace moefold::checkpoint
