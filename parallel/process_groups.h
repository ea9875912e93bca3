// Every process group of a Mapping, built by splitting the world communicator: one communicator
// per group kind this rank belongs to, named by the kind ("tp", "dp-cp", "ep", ...). Member i of
// the world communicator is rank i of the mapping; mpi.h stays out of this header.
//
//   MF_ASSIGN_OR_RETURN(auto groups, ProcessGroups::Create(mapping));
//   MF_ASSIGN_OR_RETURN(Communicator* dp, groups->Get(GroupKind::kDpCp));
//   MF_RETURN_IF_ERROR(WaitFor(dp->AllReduce(&grads, {})));
#pragma once

#include <map>
#include <memory>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/mapping.h"

namespace moefold::parallel {

class MpiCommunicator;

enum class CommBackend {
  kMpi,   // CPU tensors (MpiCommunicator)
  kNccl,  // GPU tensors (NcclCommunicator); only in builds with CUDA and NCCL
  // Tensors of any device over MPI, GPU ones staged through pinned host memory
  // (HostStagedCommunicator): several ranks sharing one GPU, where NCCL cannot run.
  kMpiHostStaged,
};

struct ProcessGroupsOptions {
  CommBackend backend = CommBackend::kMpi;
  int device = 0;  // this rank's CUDA device (kNccl)
  // The ranks of the mapping (duplicated, not owned); nullptr = MPI_COMM_WORLD. Communicators'
  // world_ranks() are MPI_COMM_WORLD ranks either way.
  const MpiCommunicator* world = nullptr;
};

// The backend a job's groups use: MPI for CPU tensors; for GPU tensors NCCL when each rank of the
// node has a GPU of its own, else MPI with host staging (several ranks share a GPU, which NCCL
// cannot hold). `gpus_on_node` as ops::CudaDeviceCount().
CommBackend ChooseCommBackend(bool gpu_tensors, int ranks_on_node, int gpus_on_node);
// The GPU of a rank: local_rank modulo the node's GPUs (ranks share GPUs round-robin).
int DeviceForLocalRank(int local_rank, int gpus_on_node);

class ProcessGroups {
 public:
  // Collective over the world: every member must call it with the same mapping and options.
  // InvalidArgument when the mapping's world size differs from the communicator's; Unimplemented
  // for kNccl in a build without NCCL; MPI/NCCL/CUDA failures as Internal naming the call.
  static absl::StatusOr<std::unique_ptr<ProcessGroups>> Create(
      const Mapping& mapping, const ProcessGroupsOptions& options = {});
  ~ProcessGroups();

  // The communicator of this rank's group of `kind`. FailedPrecondition for a kind this rank is in
  // no group of (the embedding group of a middle pipeline stage).
  absl::StatusOr<Communicator*> Get(GroupKind kind) const;
  Communicator& world() const;  // every rank of the mapping, named "world"
  const Mapping& mapping() const { return mapping_; }
  CommBackend backend() const { return backend_; }

 private:
  ProcessGroups(const Mapping& mapping, CommBackend backend)
      : mapping_(mapping), backend_(backend) {}
  Mapping mapping_;
  CommBackend backend_;
  std::unique_ptr<Communicator> world_;
  std::map<GroupKind, std::unique_ptr<Communicator>> groups_;
};

}  // namespace moefold::parallel
