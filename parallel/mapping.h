// Rank mapping with MoE parallel folding (ALGORITHMS §0; Megatron-Core's RankGenerator): two meshes
// over the same world and the same order string — attention (tp, cp, ep=1, dp, pp) and MoE
// (tp=etp, cp=1, ep, dp=edp, pp). The leftmost dimension of the order varies fastest:
// rank = Σ coordᵢ · Π_{j<i} sizeⱼ. A group of kind "a-b" holds the ranks whose coordinates differ only
// in a and b. Pure function, no MPI: tested for worlds of thousands of ranks.
//
//   MF_ASSIGN_OR_RETURN(Mapping m, Mapping::Create(16, {.tp = 2, .cp = 2, .pp = 2, .ep = 4}));
//   m.GroupOf(GroupKind::kEp, 5);   // {4, 5, 6, 7}
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moefold::parallel {

struct ParallelSizes {
  int tp = 1, cp = 1, dp = 0 /*0 = derived*/, pp = 1, etp = 1, ep = 1;
  std::string order = "tp-cp-ep-dp-pp";
};

enum class GroupKind {
  // attention mesh
  kTp, kCp, kDp, kPp, kTpCp, kDpCp, kTpCpDp, kModelParallel /*tp-pp*/, kEmbedding,
  // MoE mesh
  kEtp, kEp, kEdp, kEtpEp /*expert model parallel*/, kExpertPp,
};
inline constexpr GroupKind kAllGroupKinds[] = {
    GroupKind::kTp,  GroupKind::kCp,  GroupKind::kDp,   GroupKind::kPp,    GroupKind::kTpCp,
    GroupKind::kDpCp, GroupKind::kTpCpDp, GroupKind::kModelParallel, GroupKind::kEmbedding,
    GroupKind::kEtp, GroupKind::kEp,  GroupKind::kEdp,  GroupKind::kEtpEp, GroupKind::kExpertPp};

absl::string_view GroupKindName(GroupKind kind);  // "tp", "dp-cp", "etp-ep", "embedding", ...
bool IsMoeGroup(GroupKind kind);                  // belongs to the MoE mesh
absl::string_view GroupPurpose(GroupKind kind);   // what the group is used for (ALGORITHMS §0)

struct AttentionCoords {
  int tp, cp, dp, pp;
};
struct MoeCoords {
  int etp, ep, edp, pp;
};

class Mapping {
 public:
  // InvalidArgument showing the arithmetic when the sizes do not divide the world or the order
  // string is not a permutation of tp, cp, ep, dp, pp.
  static absl::StatusOr<Mapping> Create(int world_size, const ParallelSizes& sizes);

  int world_size() const { return world_; }
  const ParallelSizes& sizes() const { return sizes_; }  // dp resolved
  int edp() const { return edp_; }
  AttentionCoords attention_coords(int rank) const;
  MoeCoords moe_coords(int rank) const;

  // Every group of a kind, each sorted, ordered by smallest rank.
  const std::vector<std::vector<int>>& Groups(GroupKind kind) const;
  // The group of `kind` holding `rank`.
  const std::vector<int>& GroupOf(GroupKind kind, int rank) const;

 private:
  int world_ = 1;
  int edp_ = 1;
  ParallelSizes sizes_;
  std::vector<std::string> order_;  // dimension names, fastest first
  std::vector<std::vector<std::vector<int>>> groups_;  // [kind][group] -> ranks
  std::vector<std::vector<int>> group_index_;          // [kind][rank] -> group
};

}  // namespace moefold::parallel
