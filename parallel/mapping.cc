// The folded rank generator.
#include "parallel/mapping.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/status.h"

namespace moefold::parallel {
namespace {

struct KindSpec {
  GroupKind kind;
  const char* name;
  bool moe;
  std::vector<std::string> dims;  // dimensions that vary inside a group
  const char* purpose;
};

const std::vector<KindSpec>& Specs() {
  static const auto* specs = new std::vector<KindSpec>{
      {GroupKind::kTp, "tp", false, {"tp"}, "TP/SP collectives; SUM of replicated-weight grads"},
      {GroupKind::kCp, "cp", false, {"cp"}, "context-parallel K/V ring"},
      {GroupKind::kDp, "dp", false, {"dp"}, "data parallelism (without CP)"},
      {GroupKind::kPp, "pp", false, {"pp"}, "pipeline send/recv between stages"},
      {GroupKind::kTpCp, "tp-cp", false, {"tp", "cp"}, "aux-loss token counts"},
      {GroupKind::kDpCp, "dp-cp", false, {"dp", "cp"},
       "dense gradient reduction and ZeRO-1 shards"},
      {GroupKind::kTpCpDp, "tp-cp-dp", false, {"tp", "cp", "dp"},
       "FP8 amax and expert-bias counts"},
      {GroupKind::kModelParallel, "model-parallel", false, {"tp", "pp"},
       "model-parallel ranks of one replica (tp-pp)"},
      {GroupKind::kEmbedding, "embedding", false, {}, "tied embedding gradients (first + last stage)"},
      {GroupKind::kEtp, "etp", true, {"tp"}, "expert-tensor parallel FFN split"},
      {GroupKind::kEp, "ep", true, {"ep"}, "token all-to-all"},
      {GroupKind::kEdp, "edp", true, {"dp"}, "expert gradient reduction and expert ZeRO-1 shards"},
      {GroupKind::kEtpEp, "etp-ep", true, {"tp", "ep"}, "expert-model-parallel count all-gather"},
      {GroupKind::kExpertPp, "expert-pp", true, {"pp"}, "pipeline stages of the MoE mesh"},
  };
  return *specs;
}

const KindSpec& SpecOf(GroupKind kind) {
  for (const KindSpec& s : Specs()) {
    if (s.kind == kind) return s;
  }
  MF_CHECK(false) << "unknown group kind";
  return Specs()[0];
}

}  // namespace

absl::string_view GroupKindName(GroupKind kind) { return SpecOf(kind).name; }
bool IsMoeGroup(GroupKind kind) { return SpecOf(kind).moe; }
absl::string_view GroupPurpose(GroupKind kind) { return SpecOf(kind).purpose; }

absl::StatusOr<Mapping> Mapping::Create(int world, const ParallelSizes& in) {
  std::vector<std::string> problems;
  Mapping m;
  m.world_ = world;
  m.sizes_ = in;
  for (auto [name, v] : std::vector<std::pair<const char*, int>>{
           {"tp", in.tp}, {"cp", in.cp}, {"pp", in.pp}, {"etp", in.etp}, {"ep", in.ep}}) {
    if (v < 1) problems.push_back(absl::StrCat(name, " must be >= 1, got ", v));
  }
  if (world < 1) problems.push_back(absl::StrCat("world size must be >= 1, got ", world));
  m.order_ = absl::StrSplit(in.order, '-');
  const std::set<std::string> got(m.order_.begin(), m.order_.end());
  if (m.order_.size() != 5 || got != std::set<std::string>{"tp", "cp", "ep", "dp", "pp"}) {
    problems.push_back(absl::StrCat("order '", in.order,
                                    "' must name each of tp, cp, ep, dp, pp exactly once"));
  }
  if (problems.empty() && in.pp > 1 && m.order_.back() != "pp") {
    // With pp inside other dimensions its stride would differ between the two meshes whenever
    // tp·cp ≠ etp·ep, and the meshes would disagree on pipeline stages.
    problems.push_back(absl::StrCat("order '", in.order, "' must end with pp when pp = ", in.pp,
                                    " > 1, so both meshes agree on pipeline stages"));
  }
  if (problems.empty()) {
    const int attn = in.tp * in.cp * in.pp;
    if (world % attn != 0) {
      problems.push_back(absl::StrCat("world ", world, " is not divisible by tp ", in.tp, " × cp ",
                                      in.cp, " × pp ", in.pp, " = ", attn));
    } else if (in.dp > 0 && in.dp * attn != world) {
      problems.push_back(absl::StrCat("world ", world, " != tp ", in.tp, " × cp ", in.cp, " × dp ",
                                      in.dp, " × pp ", in.pp, " = ", in.dp * attn));
    } else {
      m.sizes_.dp = world / attn;
    }
    const int moe = in.etp * in.ep * in.pp;
    if (world % moe != 0) {
      problems.push_back(absl::StrCat("world ", world, " is not divisible by etp ", in.etp,
                                      " × ep ", in.ep, " × pp ", in.pp, " = ", moe,
                                      " (the MoE mesh needs W = etp·ep·edp·pp)"));
    } else {
      m.edp_ = world / moe;
    }
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("parallel layout: ", absl::StrJoin(problems, "; ")));
  }

  const std::map<std::string, int> attn_sizes = {
      {"tp", m.sizes_.tp}, {"cp", m.sizes_.cp}, {"ep", 1}, {"dp", m.sizes_.dp}, {"pp", m.sizes_.pp}};
  const std::map<std::string, int> moe_sizes = {
      {"tp", m.sizes_.etp}, {"cp", 1}, {"ep", m.sizes_.ep}, {"dp", m.edp_}, {"pp", m.sizes_.pp}};
  m.groups_.resize(std::size(kAllGroupKinds));
  m.group_index_.assign(std::size(kAllGroupKinds), std::vector<int>(world, -1));
  for (const KindSpec& spec : Specs()) {
    const int k = static_cast<int>(spec.kind);
    auto& groups = m.groups_[k];
    if (spec.kind == GroupKind::kEmbedding) continue;  // built from the pp groups below
    const auto& sizes = spec.moe ? moe_sizes : attn_sizes;
    // The group of a rank is keyed by the rank with the group's own coordinates zeroed, which is
    // also the group's smallest member; ranks are visited in order, so groups come out sorted.
    std::map<int, int> by_base;
    for (int r = 0; r < world; ++r) {
      int stride = 1, base = 0;
      for (const std::string& dim : m.order_) {
        const int size = sizes.at(dim);
        const int coord = (r / stride) % size;
        if (std::find(spec.dims.begin(), spec.dims.end(), dim) == spec.dims.end()) {
          base += coord * stride;
        }
        stride *= size;
      }
      auto [it, inserted] = by_base.emplace(base, static_cast<int>(groups.size()));
      if (inserted) groups.emplace_back();
      groups[it->second].push_back(r);
      m.group_index_[k][r] = it->second;
    }
  }
  // Embedding: the first and last stage of every pipeline group (one rank when pp = 1).
  const int emb = static_cast<int>(GroupKind::kEmbedding);
  for (const auto& pp_group : m.groups_[static_cast<int>(GroupKind::kPp)]) {
    std::vector<int> members = {pp_group.front()};
    if (pp_group.size() > 1) members.push_back(pp_group.back());
    for (int r : members) m.group_index_[emb][r] = static_cast<int>(m.groups_[emb].size());
    m.groups_[emb].push_back(members);
  }
  return m;
}

namespace {

int IndexIn(const std::vector<int>& group, int rank) {
  return static_cast<int>(std::find(group.begin(), group.end(), rank) - group.begin());
}

}  // namespace

AttentionCoords Mapping::attention_coords(int rank) const {
  return {IndexIn(GroupOf(GroupKind::kTp, rank), rank), IndexIn(GroupOf(GroupKind::kCp, rank), rank),
          IndexIn(GroupOf(GroupKind::kDp, rank), rank), IndexIn(GroupOf(GroupKind::kPp, rank), rank)};
}

MoeCoords Mapping::moe_coords(int rank) const {
  return {IndexIn(GroupOf(GroupKind::kEtp, rank), rank), IndexIn(GroupOf(GroupKind::kEp, rank), rank),
          IndexIn(GroupOf(GroupKind::kEdp, rank), rank),
          IndexIn(GroupOf(GroupKind::kExpertPp, rank), rank)};
}

const std::vector<std::vector<int>>& Mapping::Groups(GroupKind kind) const {
  return groups_[static_cast<int>(kind)];
}

const std::vector<int>& Mapping::GroupOf(GroupKind kind, int rank) const {
  MF_CHECK(rank >= 0 && rank < world_) << "rank " << rank << " of world " << world_;
  const int k = static_cast<int>(kind);
  const int g = group_index_[k][rank];
  if (g < 0) {
    // Ranks of middle pipeline stages belong to no embedding group.
    static const std::vector<int>* empty = new std::vector<int>();
    return *empty;
  }
  return groups_[k][g];
}

}  // namespace moefold::parallel
