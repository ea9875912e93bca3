// Building the groups: MPI_Comm_split with colour = index of this rank's group of each kind (key =
// rank, so members keep the mapping's order); with NCCL each split bootstraps one NCCL
// communicator.
#include "parallel/process_groups.h"

#include <mpi.h>

#include "absl/strings/str_cat.h"
#include "parallel/host_staged_communicator.h"
#include "parallel/mpi_communicator.h"
#ifdef MOEFOLD_HAVE_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace moefold::parallel {
namespace {

// The communicator the caller uses for `mpi`'s members: the MPI one itself, or an NCCL one
// bootstrapped over it (the MPI communicator is then no longer needed).
absl::StatusOr<std::unique_ptr<Communicator>> ForBackend(std::unique_ptr<MpiCommunicator> mpi,
                                                         const ProcessGroupsOptions& options) {
  if (options.backend == CommBackend::kMpi) return std::unique_ptr<Communicator>(std::move(mpi));
  if (options.backend == CommBackend::kMpiHostStaged) {
    return std::unique_ptr<Communicator>(new HostStagedCommunicator(std::move(mpi)));
  }
#ifdef MOEFOLD_HAVE_NCCL
  MF_ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> nccl,
                      NcclCommunicator::Create(*mpi, options.device));
  return std::unique_ptr<Communicator>(std::move(nccl));
#else
  return absl::UnimplementedError("the NCCL backend needs a build with CUDA and NCCL");
#endif
}

}  // namespace

CommBackend ChooseCommBackend(bool gpu_tensors, int ranks_on_node, int gpus_on_node) {
  if (!gpu_tensors) return CommBackend::kMpi;
  return ranks_on_node <= gpus_on_node ? CommBackend::kNccl : CommBackend::kMpiHostStaged;
}

int DeviceForLocalRank(int local_rank, int gpus_on_node) {
  MF_CHECK(gpus_on_node > 0 && local_rank >= 0) << local_rank << " of " << gpus_on_node << " GPUs";
  return local_rank % gpus_on_node;
}

ProcessGroups::~ProcessGroups() = default;

absl::StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::Create(
    const Mapping& mapping, const ProcessGroupsOptions& options) {
#ifndef MOEFOLD_HAVE_NCCL
  // Refused before any collective, identically on every rank.
  if (options.backend == CommBackend::kNccl) {
    return absl::UnimplementedError(
        "process groups on NCCL need a build with CUDA and NCCL (this one has neither)");
  }
#endif
  std::unique_ptr<MpiCommunicator> world;
  if (options.world != nullptr) {
    MF_ASSIGN_OR_RETURN(world, options.world->Dup("world"));
  } else {
    world = std::make_unique<MpiCommunicator>(MpiCommunicator::World("world"));
  }
  if (world->size() != mapping.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("the mapping is for ", mapping.world_size(),
                                                   " ranks but the job has ", world->size()));
  }
  const int rank = world->rank();
  std::unique_ptr<ProcessGroups> groups(new ProcessGroups(mapping, options.backend));
  for (GroupKind kind : kAllGroupKinds) {
    const int index = mapping.GroupIndex(kind, rank);
    auto split =
        world->Split(index >= 0 ? index : MPI_UNDEFINED, rank, std::string(GroupKindName(kind)));
    if (absl::IsNotFound(split.status())) continue;  // in no group of this kind
    MF_RETURN_IF_ERROR(split.status());
    MF_ASSIGN_OR_RETURN(groups->groups_[kind], ForBackend(std::move(*split), options));
  }
  MF_ASSIGN_OR_RETURN(groups->world_, ForBackend(std::move(world), options));
  return groups;
}

absl::StatusOr<Communicator*> ProcessGroups::Get(GroupKind kind) const {
  auto it = groups_.find(kind);
  if (it == groups_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("this rank is in no '", GroupKindName(kind), "' group"));
  }
  return it->second.get();
}

Communicator& ProcessGroups::world() const { return *world_; }

}  // namespace moefold::parallel
