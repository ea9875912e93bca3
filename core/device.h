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

// The node-local rank the launcher gave this process: the first of OMPI_COMM_WORLD_LOCAL_RANK,
// MV2_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID, LOCAL_RANK that is set; 0 if none.
int LocalRankFromEnvironment();
// cuda:(local_rank mod visible GPUs), made the calling thread's current device. Ranks beyond the
// GPU count share GPUs (tests on a one-GPU machine). FailedPrecondition without a GPU or backend.
absl::StatusOr<Device> SelectCudaDevice(int local_rank);

}  // namespace moefold
