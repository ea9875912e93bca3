// Which communicator backend a job uses and which GPU each rank drives, decided from the physical
// GPUs the ranks of each node see (their UUIDs), not from how many: under Slurm every rank may see
// exactly one GPU (CUDA_VISIBLE_DEVICES per task), all different, which is NCCL's case, while ranks
// that see the same GPU must share it through host-staged MPI. Every rank of the job agrees.
//
//   MF_ASSIGN_OR_RETURN(GpuPlacement placement, PlaceRanks(world, gpu_training, VisibleGpuIds()));
//   ProcessGroups::Create(mapping, {.backend = placement.backend, .device = placement.device});
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "parallel/mpi_communicator.h"

namespace moefold::parallel {

enum class CommBackend {
  kMpi,   // CPU tensors (MpiCommunicator)
  kNccl,  // GPU tensors (NcclCommunicator); only in builds with CUDA and NCCL
  // Tensors of any device over MPI, GPU ones staged through pinned host memory
  // (HostStagedCommunicator): several ranks sharing one GPU, where NCCL cannot run.
  kMpiHostStaged,
};

// "MPI", "NCCL", "host-staged MPI".
absl::string_view CommBackendName(CommBackend backend);

// Whether this build has the NCCL backend.
bool NcclBuilt();

// The plan for the ranks of one node.
struct NodePlacement {
  CommBackend backend = CommBackend::kMpi;
  std::vector<int> devices;  // per node-local rank: its CUDA device (index into what it sees)
  int gpus = 0;              // distinct physical GPUs the node's ranks drive
  std::string reason;        // why the backend, e.g. "4 ranks on 4 distinct GPUs"
};

// The decision for GPU training from `visible[r]`, the physical ids of the GPUs node-local rank r
// sees in its CUDA device order. Each rank in turn takes the first of its GPUs that no lower rank
// took, and when all are taken shares GPU (r mod its count) — with identical lists this is rank r
// on device r, and round-robin beyond. NCCL when every rank holds a GPU of its own; host-staged MPI
// when ranks share one (NCCL holds one rank per GPU), when a rank sees no GPU (the trainer then
// refuses), when an id is empty (unknown: it may be shared), or when `nccl_built` is false.
NodePlacement ChooseNodePlacement(const std::vector<std::vector<std::string>>& visible,
                                  bool nccl_built);

// What a rank learns from PlaceRanks.
struct GpuPlacement {
  CommBackend backend = CommBackend::kMpi;
  int device = 0;      // this rank's CUDA device
  std::string gpu;     // its physical id; empty for CPU training
  std::string reason;  // for the start-up line
};

// Collective over `world`: the ranks of each node (sharing memory) all-gather `my_gpus` (this
// rank's VisibleGpuIds) and decide with ChooseNodePlacement; then every rank takes the weakest
// backend any node chose (host staging anywhere makes it host staging everywhere, since a group
// may span nodes). CPU training: MPI and device 0, with no exchange. Errors: the MPI calls' (each
// with the default timeout).
absl::StatusOr<GpuPlacement> PlaceRanks(MpiCommunicator& world, bool gpu_training,
                                        const std::vector<std::string>& my_gpus);

// The physical ids of the GPUs this process sees, in CUDA device order (ops::CudaDeviceUuid; empty
// strings for ids that cannot be read). Empty without a GPU.
std::vector<std::string> VisibleGpuIds();

// The communication libraries this binary runs with, for a run's environment record: the MPI
// library's own version line, and NCCL's version ("2.27.3"; "not built" without the backend).
std::string MpiLibraryVersion();
std::string NcclVersion();

}  // namespace moefold::parallel
