// Building the groups: MPI_Comm_split with colour = index of this rank's group of each kind.
#include "parallel/process_groups.h"

#include "absl/strings/str_cat.h"
#include "parallel/mpi_communicator.h"

namespace moefold::parallel {

ProcessGroups::~ProcessGroups() = default;

absl::StatusOr<std::unique_ptr<ProcessGroups>> ProcessGroups::Create(const Mapping& mapping) {
  int world_size = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (world_size != mapping.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("the mapping is for ", mapping.world_size(),
                                                   " ranks but the job has ", world_size));
  }
  std::unique_ptr<ProcessGroups> groups(new ProcessGroups(mapping));
  auto world = std::make_unique<MpiCommunicator>(MpiCommunicator::World("world"));
  for (GroupKind kind : kAllGroupKinds) {
    const auto& all = mapping.Groups(kind);
    const auto& mine = mapping.GroupOf(kind, rank);
    int color = MPI_UNDEFINED;
    for (size_t g = 0; g < all.size(); ++g) {
      if (!mine.empty() && all[g] == mine) color = static_cast<int>(g);
    }
    MPI_Comm split;
    MF_RETURN_IF_ERROR(MpiStatus(MPI_Comm_split(world->native(), color, rank, &split),
                                 absl::StrCat("MPI_Comm_split for group ", GroupKindName(kind))));
    if (split == MPI_COMM_NULL) continue;
    groups->groups_[kind] =
        std::make_unique<MpiCommunicator>(split, std::string(GroupKindName(kind)), /*owned=*/true);
  }
  groups->world_ = std::move(world);
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
