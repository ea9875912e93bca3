// Building the groups: MPI_Comm_split with colour = index of this rank's group of each kind (key =
// rank, so members keep the mapping's order); with NCCL each split is the bootstrap of an NCCL
// communicator set up on its first op. Every communicator is wrapped for timing.
#include "parallel/process_groups.h"

#include <mpi.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ops/device_query.h"
#include "parallel/host_staged_communicator.h"
#include "parallel/mpi_communicator.h"
#ifdef MOEFOLD_HAVE_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace moefold::parallel {
namespace {

// The communicator the caller uses for `mpi`'s members: the MPI one itself, host staging around
// it, or an NCCL one it bootstraps on the first op; timed in every case.
std::unique_ptr<Communicator> ForBackend(std::unique_ptr<MpiCommunicator> mpi,
                                         const ProcessGroupsOptions& options,
                                         const std::shared_ptr<CommTimeline>& timeline) {
  std::unique_ptr<Communicator> comm;
  switch (options.backend) {
    case CommBackend::kMpi:
      comm = std::move(mpi);
      break;
    case CommBackend::kMpiHostStaged:
      comm = std::make_unique<HostStagedCommunicator>(std::move(mpi));
      break;
    case CommBackend::kNccl:
#ifdef MOEFOLD_HAVE_NCCL
      comm = NcclCommunicator::CreateLazy(std::move(mpi), options.device);
#endif
      break;
  }
  MF_CHECK(comm != nullptr) << "backend " << CommBackendName(options.backend) << " not built";
  return std::make_unique<TimedCommunicator>(std::move(comm), timeline);
}

// The stream whose waiting counts as exposed communication: the compute stream of the device the
// backend's tensors live on. Host staging without that GPU (its tests on a CPU machine) moves host
// tensors only.
Stream ComputeStream(const ProcessGroupsOptions& options) {
  if (options.backend == CommBackend::kMpi) return CpuStream();
  if (options.device < ops::CudaDeviceCount()) return DefaultStream(Device::Cuda(options.device));
  return CpuStream();
}

}  // namespace

ProcessGroups::~ProcessGroups() = default;

absl::StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::Create(
    const Mapping& mapping, const ProcessGroupsOptions& options) {
  // Refused before any collective, identically on every rank.
  if (options.backend == CommBackend::kNccl && !NcclBuilt()) {
    return absl::UnimplementedError(
        "process groups on NCCL need a build with CUDA and NCCL (this one has neither)");
  }
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
  groups->timeline_ = std::make_shared<CommTimeline>(ComputeStream(options));
  for (GroupKind kind : kAllGroupKinds) {
    const int index = mapping.GroupIndex(kind, rank);
    auto split =
        world->Split(index >= 0 ? index : MPI_UNDEFINED, rank, std::string(GroupKindName(kind)));
    if (absl::IsNotFound(split.status())) continue;  // in no group of this kind
    MF_RETURN_IF_ERROR(split.status());
    groups->groups_[kind] = ForBackend(std::move(*split), options, groups->timeline_);
  }
  groups->world_ = ForBackend(std::move(world), options, groups->timeline_);
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

std::string ProcessGroups::DescribeBackends() const {
  std::vector<std::string> parts;
  auto add = [&](const Communicator& comm) {
    if (comm.size() > 1) {
      parts.push_back(absl::StrCat(comm.name(), " ", comm.size(), ": ", CommBackendName(backend_)));
    }
  };
  for (const auto& [kind, comm] : groups_) add(*comm);
  add(*world_);
  return parts.empty() ? "none (one rank)" : absl::StrJoin(parts, ", ");
}

}  // namespace moefold::parallel
