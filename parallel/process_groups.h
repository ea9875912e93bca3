// Every process group of a Mapping, built by splitting the world communicator: one communicator
// per group kind this rank belongs to, named by the kind ("tp", "dp-cp", "ep", ...). Member i of
// the world communicator is rank i of the mapping; mpi.h stays out of this header. NCCL
// communicators are set up on their first op, so only the groups a run uses cost an NCCL set-up.
// Every communicator is timed (TimedCommunicator): TakeCommTimes gives each kind's communication
// time and the part the compute waited for.
//
//   MF_ASSIGN_OR_RETURN(auto groups, ProcessGroups::Create(mapping));
//   MF_ASSIGN_OR_RETURN(Communicator* dp, groups->Get(GroupKind::kDpCp));
//   MF_RETURN_IF_ERROR(WaitFor(dp->AllReduce(&grads, {})));
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "parallel/comm_backend.h"
#include "parallel/communicator.h"
#include "parallel/mapping.h"
#include "parallel/timed_communicator.h"

namespace moefold::parallel {

class MpiCommunicator;

struct ProcessGroupsOptions {
  CommBackend backend = CommBackend::kMpi;  // as PlaceRanks chose
  int device = 0;                           // this rank's CUDA device (kNccl, kMpiHostStaged)
  // The ranks of the mapping (duplicated, not owned); nullptr = MPI_COMM_WORLD. Communicators'
  // world_ranks() are MPI_COMM_WORLD ranks either way.
  const MpiCommunicator* world = nullptr;
};

class ProcessGroups {
 public:
  // Collective over the world: every member must call it with the same mapping and options.
  // InvalidArgument when the mapping's world size differs from the communicator's; Unimplemented
  // for kNccl in a build without NCCL; MPI failures as Internal naming the call. NCCL set-up
  // failures (and its timeout) come from the first op of the group.
  static absl::StatusOr<std::unique_ptr<ProcessGroups>> Create(
      const Mapping& mapping, const ProcessGroupsOptions& options = {});
  ~ProcessGroups();

  // The communicator of this rank's group of `kind`. FailedPrecondition for a kind this rank is in
  // no group of (the embedding group of a middle pipeline stage).
  absl::StatusOr<Communicator*> Get(GroupKind kind) const;
  Communicator& world() const;  // every rank of the mapping, named "world"
  const Mapping& mapping() const { return mapping_; }
  CommBackend backend() const { return backend_; }

  // Each kind's communication since the last call (CommTimeline::Take): call it once per step,
  // after the step waited for the device.
  absl::StatusOr<CommTimes> TakeCommTimes() const { return timeline_->Take(); }
  // "dp 4: NCCL, dp-cp 4: NCCL, world 4: NCCL": this rank's groups of more than one rank, their
  // sizes and backend, the world last.
  std::string DescribeBackends() const;

 private:
  ProcessGroups(const Mapping& mapping, CommBackend backend)
      : mapping_(mapping), backend_(backend) {}
  Mapping mapping_;
  CommBackend backend_;
  std::shared_ptr<CommTimeline> timeline_;
  std::unique_ptr<Communicator> world_;
  std::map<GroupKind, std::unique_ptr<Communicator>> groups_;
};

}  // namespace moefold::parallel
