// A read-only memory mapping of a whole file (POSIX mmap), owned and unmapped on destruction.
// Invariant: data() points at size() readable bytes for the object's lifetime (nullptr when empty).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moefold::data {

class MappedFile {
 public:
  // Maps `path` read-only. Returns NotFound when it does not exist and InvalidArgument when it
  // cannot be opened, is not a regular file or cannot be mapped; each message names the path.
  static absl::StatusOr<MappedFile> Open(absl::string_view path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void Reset();

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace moefold::data
