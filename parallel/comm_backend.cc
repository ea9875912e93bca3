// Backend choice: GPU ids gathered per node, one plan per node, the weakest backend job-wide.
#include "parallel/comm_backend.h"

#include <mpi.h>
#ifdef MOEFOLD_HAVE_NCCL
#include <nccl.h>
#endif

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "ops/device_query.h"

namespace moefold::parallel {
namespace {

constexpr int64_t kIdBytes = 64;  // a UUID as text ("GPU-" + 36) with room to spare

}  // namespace

absl::string_view CommBackendName(CommBackend backend) {
  switch (backend) {
    case CommBackend::kMpi:
      return "MPI";
    case CommBackend::kNccl:
      return "NCCL";
    case CommBackend::kMpiHostStaged:
      return "host-staged MPI";
  }
  return "?";
}

bool NcclBuilt() {
#ifdef MOEFOLD_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

NodePlacement ChooseNodePlacement(const std::vector<std::vector<std::string>>& visible,
                                  bool nccl_built) {
  NodePlacement plan;
  const int ranks = static_cast<int>(visible.size());
  plan.devices.assign(ranks, 0);
  std::set<std::string> taken;
  bool shared = false, blind = false, unknown = false;
  for (int r = 0; r < ranks; ++r) {
    const std::vector<std::string>& gpus = visible[r];
    if (gpus.empty()) {
      blind = true;
      continue;
    }
    int device = -1;
    for (int d = 0; d < static_cast<int>(gpus.size()) && device < 0; ++d) {
      if (!taken.count(gpus[d])) device = d;
    }
    if (device < 0) {
      device = r % static_cast<int>(gpus.size());
      shared = true;
    }
    if (gpus[device].empty()) unknown = true;
    taken.insert(gpus[device]);
    plan.devices[r] = device;
  }
  plan.gpus = static_cast<int>(taken.size());
  const std::string ranks_on =
      absl::StrCat(ranks, " rank(s) of this node on ", plan.gpus, " distinct GPU(s)");
  if (blind) {
    plan.backend = CommBackend::kMpiHostStaged;
    plan.reason = "a rank of this node sees no GPU";
  } else if (unknown) {
    plan.backend = CommBackend::kMpiHostStaged;
    plan.reason = absl::StrCat(ranks_on, ", some of unknown identity (they may be shared)");
  } else if (shared) {
    plan.backend = CommBackend::kMpiHostStaged;
    plan.reason = absl::StrCat(ranks_on, ": ranks share GPUs, which NCCL cannot");
  } else if (!nccl_built) {
    plan.backend = CommBackend::kMpiHostStaged;
    plan.reason = absl::StrCat(ranks_on, ", but this build has no NCCL");
  } else {
    plan.backend = CommBackend::kNccl;
    plan.reason = absl::StrCat(ranks_on, ", each rank on its own");
  }
  return plan;
}

absl::StatusOr<GpuPlacement> PlaceRanks(MpiCommunicator& world, bool gpu_training,
                                        const std::vector<std::string>& my_gpus) {
  GpuPlacement placement;
  if (!gpu_training) {
    placement.reason = "CPU tensors";
    return placement;
  }
  MPI_Comm shared;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Comm_split_type(world.native(), MPI_COMM_TYPE_SHARED,
                                                   world.rank(), MPI_INFO_NULL, &shared),
                               "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)"));
  MpiCommunicator node(shared, "node", /*owned=*/true);
  // Every rank's id list, padded to the longest: counts first, then the fixed-size slots.
  Tensor count = Tensor::FromVectorI32({static_cast<int32_t>(my_gpus.size())}, {1});
  Tensor counts = Tensor::Empty({node.size()}, DType::kI32);
  MF_RETURN_IF_ERROR(WaitFor(node.AllGather(count, &counts, {})));
  int64_t most = 0;
  for (int r = 0; r < node.size(); ++r) most = std::max<int64_t>(most, counts.data<int32_t>()[r]);
  std::vector<std::vector<std::string>> visible(node.size());
  if (most > 0) {
    Tensor mine = Tensor::Zeros({most * kIdBytes}, DType::kU8);
    for (size_t d = 0; d < my_gpus.size(); ++d) {
      std::memcpy(mine.data<uint8_t>() + d * kIdBytes, my_gpus[d].data(),
                  std::min<size_t>(my_gpus[d].size(), kIdBytes - 1));
    }
    Tensor all = Tensor::Empty({node.size() * most * kIdBytes}, DType::kU8);
    MF_RETURN_IF_ERROR(WaitFor(node.AllGather(mine, &all, {})));
    for (int r = 0; r < node.size(); ++r) {
      for (int d = 0; d < counts.data<int32_t>()[r]; ++d) {
        const char* slot =
            reinterpret_cast<const char*>(all.data<uint8_t>()) + (r * most + d) * kIdBytes;
        visible[r].emplace_back(slot, strnlen(slot, kIdBytes));
      }
    }
  }
  const NodePlacement plan = ChooseNodePlacement(visible, NcclBuilt());
  placement.backend = plan.backend;
  placement.device = plan.devices[node.rank()];
  if (placement.device < static_cast<int>(my_gpus.size())) {
    placement.gpu = my_gpus[placement.device];
  }
  placement.reason = plan.reason;
  // Groups span nodes: NCCL only if every node chose it.
  Tensor staged = Tensor::FromVectorI32({plan.backend == CommBackend::kMpiHostStaged ? 1 : 0}, {1});
  MF_RETURN_IF_ERROR(WaitFor(world.AllReduce(&staged, {.op = ReduceOp::kMax})));
  if (staged.data<int32_t>()[0] == 1 && placement.backend != CommBackend::kMpiHostStaged) {
    placement.backend = CommBackend::kMpiHostStaged;
    absl::StrAppend(&placement.reason, ", but ranks of another node share GPUs");
  }
  return placement;
}

std::vector<std::string> VisibleGpuIds() {
  std::vector<std::string> ids;
  const int n = ops::CudaDeviceCount();
  for (int d = 0; d < n; ++d) ids.push_back(ops::CudaDeviceUuid(d));
  return ids;
}

std::string MpiLibraryVersion() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int length = 0;
  if (MPI_Get_library_version(version, &length) != MPI_SUCCESS) return "unknown";
  std::string text(version, std::min<int>(length, MPI_MAX_LIBRARY_VERSION_STRING));
  const size_t newline = text.find_first_of("\n,");
  return newline == std::string::npos ? text : text.substr(0, newline);
}

std::string NcclVersion() {
#ifdef MOEFOLD_HAVE_NCCL
  int code = 0;
  if (ncclGetVersion(&code) != ncclSuccess) return "unknown";
  return absl::StrCat(code / 10000, ".", code / 100 % 100, ".", code % 100);
#else
  return "not built";
#endif
}

}  // namespace moefold::parallel
