// Device naming.
#include "core/device.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "core/cuda_runtime.h"
#include "core/status.h"

namespace moefold {

std::string Device::ToString() const {
  return is_cpu() ? std::string("cpu") : absl::StrCat("cuda:", index);
}

absl::StatusOr<Device> ParseDevice(absl::string_view name) {
  if (name == "cpu") return Device::Cpu();
  if (name == "cuda") return Device::Cuda(0);
  int index;
  if (absl::StartsWith(name, "cuda:") && absl::SimpleAtoi(name.substr(5), &index) && index >= 0) {
    return Device::Cuda(index);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown device '", name, "' (expected cpu or cuda:N)"));
}

int LocalRankFromEnvironment() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
                           "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"}) {
    const char* value = std::getenv(name);
    int rank;
    if (value != nullptr && absl::SimpleAtoi(value, &rank) && rank >= 0) return rank;
  }
  return 0;
}

absl::StatusOr<Device> SelectCudaDevice(int local_rank) {
  if (local_rank < 0) {
    return absl::InvalidArgumentError(absl::StrCat("local rank ", local_rank, " is negative"));
  }
  if (!cuda::BackendBuilt()) {
    return absl::FailedPreconditionError(
        "no CUDA device: moefold was built without the CUDA backend (-DMOEFOLD_CUDA=OFF or no "
        "nvcc)");
  }
  const int count = cuda::DeviceCount();
  if (count == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no CUDA device is visible to local rank ", local_rank,
                     " (check CUDA_VISIBLE_DEVICES and the driver)"));
  }
  const Device device = Device::Cuda(local_rank % count);
  if (absl::Status s = cuda::SetDevice(device.index); !s.ok()) {
    return Annotate(s,
                    absl::StrCat("selecting ", device.ToString(), " for local rank ", local_rank));
  }
  return device;
}

}  // namespace moefold
