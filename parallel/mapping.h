// Rank mapping with MoE parallel folding (docs/FORMULAS.md §1; Megatron-Core's RankGenerator): two
// meshes over the same world and the same order string — attention (tp, cp, ep=1, dp, pp) and MoE
// (tp=etp, cp=1, ep, dp=edp, pp). The leftmost dimension of the order varies fastest:
// rank = Σ coordᵢ · Π_{j<i} sizeⱼ. A group of kind "a-b" holds the ranks whose coordinates differ
// only in a and b. Pure function, no MPI: tested for worlds of thousands of ranks.
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

// Group kinds; each group holds the ranks whose coordinates differ only in the listed dimensions.
enum class GroupKind {
  // Attention mesh (tp, cp, dp, pp).
  kTp,             // "tp"
  kCp,             // "cp"
  kDp,             // "dp"
  kPp,             // "pp"
  kTpCp,           // "tp-cp"
  kDpCp,           // "dp-cp"
  kTpCpDp,         // "tp-cp-dp"
  kModelParallel,  // "model-parallel": tp-pp, Megatron-Core's model-parallel group
  kEmbedding,      // "embedding": first + last rank of each pp group (one rank when pp = 1)
  // MoE mesh (etp, ep, edp, pp).
  kEtp,       // "etp"
  kEp,        // "ep"
  kEdp,       // "edp"
  kEtpEp,     // "etp-ep": expert model parallel
  kExpertPp,  // "expert-pp": the MoE mesh's pp groups (always equal to kPp's)
};
inline constexpr GroupKind kAllGroupKinds[] = {
    GroupKind::kTp,        GroupKind::kCp,      GroupKind::kDp,     GroupKind::kPp,
    GroupKind::kTpCp,      GroupKind::kDpCp,    GroupKind::kTpCpDp, GroupKind::kModelParallel,
    GroupKind::kEmbedding, GroupKind::kEtp,     GroupKind::kEp,     GroupKind::kEdp,
    GroupKind::kEtpEp,     GroupKind::kExpertPp};

absl::string_view GroupKindName(GroupKind kind);  // "tp", "dp-cp", "etp-ep", "embedding", ...
bool IsMoeGroup(GroupKind kind);                  // belongs to the MoE mesh
absl::string_view GroupPurpose(GroupKind kind);   // what it is used for (docs/FORMULAS.md §1)

struct AttentionCoords {
  int tp, cp, dp, pp;
};
struct MoeCoords {
  int etp, ep, edp, pp;
};

class Mapping {
 public:
  // Validates W = tp·cp·dp·pp = etp·ep·edp·pp (dp derived when 0, edp always derived), the order
  // string (a permutation of tp, cp, ep, dp, pp) and that both meshes cut identical pipeline groups
  // (equal products of the dimensions left of pp). InvalidArgument listing every problem with its
  // arithmetic ("world 12 is not divisible by tp 2 × cp 1 × pp 4 = 8").
  static absl::StatusOr<Mapping> Create(int world_size, const ParallelSizes& sizes);

  int world_size() const { return world_; }
  const ParallelSizes& sizes() const { return sizes_; }  // dp resolved
  int edp() const { return edp_; }
  // Coordinates of `rank` in each mesh; O(1). MF_CHECK: 0 <= rank < world_size().
  AttentionCoords attention_coords(int rank) const;
  MoeCoords moe_coords(int rank) const;

  // Every group of a kind, each sorted, ordered by smallest rank; W/|group| of them (embedding: one
  // per pipeline group).
  const std::vector<std::vector<int>>& Groups(GroupKind kind) const;
  // The group of `kind` holding `rank`; O(1). Empty for the embedding group of a middle stage.
  const std::vector<int>& GroupOf(GroupKind kind, int rank) const;
  // Index into Groups(kind) of the group holding `rank` (an MPI_Comm_split colour), -1 if none.
  int GroupIndex(GroupKind kind, int rank) const;

 private:
  int world_ = 1;
  int edp_ = 1;
  ParallelSizes sizes_;
  std::vector<AttentionCoords> attention_;             // [rank]
  std::vector<MoeCoords> moe_;                         // [rank]
  std::vector<std::vector<std::vector<int>>> groups_;  // [kind][group] -> ranks
  std::vector<std::vector<int>> group_index_;          // [kind][rank] -> group, -1 if none
};

}  // namespace moefold::parallel
