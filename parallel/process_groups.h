// Every process group of a Mapping, built by splitting the world communicator: one communicator
// per group kind this rank belongs to, named by the kind ("tp", "dp-cp", "ep", ...).
//
//   MF_ASSIGN_OR_RETURN(auto groups, ProcessGroups::Create(mapping));
//   groups->Get(GroupKind::kDpCp).AllReduce(&grads, {});
#pragma once

#include <map>
#include <memory>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/mapping.h"

namespace moefold::parallel {

class ProcessGroups {
 public:
  // Collective over the world: every rank must call it with the same mapping. MPI backend (CPU
  // tensors); the NCCL backend joins with the CUDA runtime.
  static absl::StatusOr<std::unique_ptr<ProcessGroups>> Create(const Mapping& mapping);
  ~ProcessGroups();

  // The communicator of this rank's group of `kind`. FailedPrecondition for a kind this rank is in
  // no group of (the embedding group of a middle pipeline stage).
  absl::StatusOr<Communicator*> Get(GroupKind kind) const;
  Communicator& world() const;
  const Mapping& mapping() const { return mapping_; }

 private:
  explicit ProcessGroups(const Mapping& mapping) : mapping_(mapping) {}
  Mapping mapping_;
  std::unique_ptr<Communicator> world_;
  std::map<GroupKind, std::unique_ptr<Communicator>> groups_;
};

}  // namespace moefold::parallel
