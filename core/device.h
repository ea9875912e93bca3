// Where a tensor lives: the host ("cpu") or one GPU ("cuda:N").
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace moefold {

struct Device {
  enum class Kind { kCpu, kCuda };
  Kind kind = Kind::kCpu;
  int index = 0;

  static Device Cpu() { return {}; }
  static Device Cuda(int index) { return {Kind::kCuda, index}; }
  bool is_cpu() const { return kind == Kind::kCpu; }
  bool is_cuda() const { return kind == Kind::kCuda; }
  std::string ToString() const;  // "cpu" or "cuda:N"
  bool operator==(const Device&) const = default;
};

absl::StatusOr<Device> ParseDevice(absl::string_view name);

}  // namespace moefold
