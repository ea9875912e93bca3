// Plan output: mesh tables, per-rank groups, JSON.
#include "parallel/mapping_format.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace moefold::parallel {
namespace {

constexpr int kMaxTableRows = 64;

std::string RankList(const std::vector<int>& ranks) {
  return absl::StrCat("[", absl::StrJoin(ranks, ","), "]");
}

}  // namespace

std::string FormatMeshTables(const Mapping& m) {
  const ParallelSizes& s = m.sizes();
  std::string out = absl::StrFormat(
      "world %d  order %s\n"
      "attention mesh: tp %d × cp %d × dp %d × pp %d\n"
      "MoE mesh:       etp %d × ep %d × edp %d × pp %d\n\n"
      " rank |  tp  cp  dp  pp | etp  ep edp  pp\n"
      "------+-----------------+----------------\n",
      m.world_size(), s.order, s.tp, s.cp, s.dp, s.pp, s.etp, s.ep, m.edp(), s.pp);
  const int rows = std::min(m.world_size(), kMaxTableRows);
  for (int r = 0; r < rows; ++r) {
    const AttentionCoords a = m.attention_coords(r);
    const MoeCoords e = m.moe_coords(r);
    absl::StrAppendFormat(&out, "%5d | %3d %3d %3d %3d | %3d %3d %3d %3d\n", r, a.tp, a.cp, a.dp,
                          a.pp, e.etp, e.ep, e.edp, e.pp);
  }
  if (m.world_size() > rows) {
    absl::StrAppendFormat(&out, "  ... %d more ranks (use --json for all groups)\n",
                          m.world_size() - rows);
  }
  return out;
}

std::string FormatRankGroups(const Mapping& m, int rank) {
  std::string out = absl::StrFormat("groups of rank %d:\n", rank);
  for (GroupKind kind : kAllGroupKinds) {
    const auto& group = m.GroupOf(kind, rank);
    absl::StrAppendFormat(&out, "  %-9s %-15s %-24s %s\n", IsMoeGroup(kind) ? "MoE" : "attention",
                          GroupKindName(kind), group.empty() ? "(none)" : RankList(group),
                          GroupPurpose(kind));
  }
  return out;
}

JsonLine MappingToJson(const Mapping& m) {
  const ParallelSizes& s = m.sizes();
  JsonLine sizes;
  sizes.Add("tp", s.tp).Add("cp", s.cp).Add("dp", s.dp).Add("pp", s.pp).Add("etp", s.etp);
  sizes.Add("ep", s.ep).Add("edp", m.edp());
  JsonLine json;
  json.Add("world", m.world_size()).Add("order", s.order).Add("sizes", sizes);
  for (bool moe : {false, true}) {
    JsonLine groups;
    for (GroupKind kind : kAllGroupKinds) {
      if (IsMoeGroup(kind) != moe) continue;
      std::vector<std::vector<int64_t>> lists;
      for (const auto& g : m.Groups(kind)) lists.emplace_back(g.begin(), g.end());
      groups.Add(GroupKindName(kind), lists);
    }
    json.Add(moe ? "moe" : "attention", groups);
  }
  return json;
}

}  // namespace moefold::parallel
