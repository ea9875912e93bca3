// The folded rank generator: coordinates from the order string's mixed radix, groups keyed by the
// rank with the group's own coordinates zeroed (that rank is also the group's smallest member).
#include "parallel/mapping.h"

#include <array>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/status.h"

namespace moefold::parallel {
namespace {

// The five dimensions of the order string. Both meshes have all five: ep = 1 in the attention
// mesh, cp = 1 in the MoE mesh (Megatron-Core builds both generators that way).
enum Dim { kTpDim, kCpDim, kEpDim, kDpDim, kPpDim, kNumDims };
using DimArray = std::array<int, kNumDims>;
constexpr const char* kAttentionDimNames[kNumDims] = {"tp", "cp", "ep", "dp", "pp"};
constexpr const char* kMoeDimNames[kNumDims] = {"etp", "cp", "ep", "edp", "pp"};

constexpr unsigned Bits(std::initializer_list<Dim> dims) {
  unsigned bits = 0;
  for (Dim d : dims) bits |= 1u << d;
  return bits;
}

struct KindSpec {
  GroupKind kind;
  const char* name;
  bool moe;
  unsigned dims;  // dimensions whose coordinates vary inside one group
  const char* purpose;
};

// Indexed by GroupKind; the purposes of docs/FORMULAS.md §1 ("What each group carries").
constexpr KindSpec kSpecs[] = {
    {GroupKind::kTp, "tp", false, Bits({kTpDim}),
     "TP/SP collectives; SUM of replicated-weight grads"},
    {GroupKind::kCp, "cp", false, Bits({kCpDim}), "context-parallel K/V ring"},
    {GroupKind::kDp, "dp", false, Bits({kDpDim}), "data sharding: members read different samples"},
    {GroupKind::kPp, "pp", false, Bits({kPpDim}), "pipeline send/recv between stages"},
    {GroupKind::kTpCp, "tp-cp", false, Bits({kTpDim, kCpDim}), "aux-loss token counts"},
    {GroupKind::kDpCp, "dp-cp", false, Bits({kDpDim, kCpDim}),
     "dense gradient reduction and ZeRO-1 shards"},
    {GroupKind::kTpCpDp, "tp-cp-dp", false, Bits({kTpDim, kCpDim, kDpDim}),
     "FP8 amax and expert-bias counts"},
    {GroupKind::kModelParallel, "model-parallel", false, Bits({kTpDim, kPpDim}),
     "the tp × pp ranks of one model replica"},
    {GroupKind::kEmbedding, "embedding", false, 0, "tied embedding gradients (first + last stage)"},
    {GroupKind::kEtp, "etp", true, Bits({kTpDim}),
     "expert-tensor-parallel split of the expert FFN"},
    {GroupKind::kEp, "ep", true, Bits({kEpDim}), "token all-to-all"},
    {GroupKind::kEdp, "edp", true, Bits({kDpDim}),
     "expert gradient reduction and expert ZeRO-1 shards"},
    {GroupKind::kEtpEp, "etp-ep", true, Bits({kTpDim, kEpDim}),
     "expert model parallel: count all-gather"},
    {GroupKind::kExpertPp, "expert-pp", true, Bits({kPpDim}),
     "pipeline stages of the MoE mesh (same groups as pp)"},
};
constexpr int kNumKinds = static_cast<int>(std::size(kSpecs));

constexpr bool SpecsMatchEnum() {
  if (std::size(kAllGroupKinds) != std::size(kSpecs)) return false;
  for (int i = 0; i < kNumKinds; ++i) {
    if (static_cast<int>(kSpecs[i].kind) != i || kAllGroupKinds[i] != kSpecs[i].kind) return false;
  }
  return true;
}
static_assert(SpecsMatchEnum(), "kSpecs and kAllGroupKinds must list GroupKind in enum order");

const KindSpec& SpecOf(GroupKind kind) {
  const int k = static_cast<int>(kind);
  MF_CHECK(k >= 0 && k < kNumKinds) << "unknown group kind " << k;
  return kSpecs[k];
}

// "tp 2 × cp 1 × pp 4" and its product, for error messages.
std::string Product(const std::vector<std::pair<const char*, int>>& terms, int64_t* product) {
  *product = 1;
  std::vector<std::string> parts;
  for (const auto& [name, size] : terms) {
    parts.push_back(absl::StrCat(name, " ", size));
    *product *= size;
  }
  return absl::StrJoin(parts, " × ");
}

}  // namespace

absl::string_view GroupKindName(GroupKind kind) { return SpecOf(kind).name; }
bool IsMoeGroup(GroupKind kind) { return SpecOf(kind).moe; }
absl::string_view GroupPurpose(GroupKind kind) { return SpecOf(kind).purpose; }

absl::StatusOr<Mapping> Mapping::Create(int world, const ParallelSizes& in) {
  std::vector<std::string> problems;
  for (auto [name, v] : std::vector<std::pair<const char*, int>>{
           {"tp", in.tp}, {"cp", in.cp}, {"pp", in.pp}, {"etp", in.etp}, {"ep", in.ep}}) {
    if (v < 1) problems.push_back(absl::StrCat(name, " must be >= 1, got ", v));
  }
  if (in.dp < 0) problems.push_back(absl::StrCat("dp must be >= 0 (0 = derived), got ", in.dp));
  if (world < 1) problems.push_back(absl::StrCat("world size must be >= 1, got ", world));

  // The order, fastest-varying dimension first.
  std::vector<Dim> order;
  bool order_ok = true;
  unsigned seen = 0;
  for (absl::string_view token : absl::StrSplit(in.order, '-')) {
    int d = 0;
    while (d < kNumDims && token != kAttentionDimNames[d]) ++d;
    if (d == kNumDims || (seen & (1u << d)) != 0) {
      order_ok = false;
      break;
    }
    seen |= 1u << d;
    order.push_back(static_cast<Dim>(d));
  }
  if (!order_ok || order.size() != kNumDims) {
    problems.push_back(absl::StrCat("order '", in.order,
                                    "' must name each of tp, cp, ep, dp, pp exactly once, "
                                    "joined by '-' (leftmost varies fastest)"));
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel layout: ", absl::StrJoin(problems, "; ")));
  }

  // Sizes divide the world (products in 64 bits: sizes come from configs).
  Mapping m;
  m.world_ = world;
  m.sizes_ = in;
  int64_t attn = 0, moe = 0;
  const std::string attn_terms = Product({{"tp", in.tp}, {"cp", in.cp}, {"pp", in.pp}}, &attn);
  if (world % attn != 0) {
    problems.push_back(
        absl::StrCat("world ", world, " is not divisible by ", attn_terms, " = ", attn));
  } else if (in.dp > 0 && in.dp * attn != world) {
    problems.push_back(absl::StrCat("world ", world, " != tp ", in.tp, " × cp ", in.cp, " × dp ",
                                    in.dp, " × pp ", in.pp, " = ", in.dp * attn));
  } else {
    m.sizes_.dp = static_cast<int>(world / attn);
  }
  const std::string moe_terms = Product({{"etp", in.etp}, {"ep", in.ep}, {"pp", in.pp}}, &moe);
  if (world % moe != 0) {
    problems.push_back(absl::StrCat("world ", world, " is not divisible by ", moe_terms, " = ", moe,
                                    " (the MoE mesh needs W = etp·ep·edp·pp)"));
  } else {
    m.edp_ = static_cast<int>(world / moe);
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel layout: ", absl::StrJoin(problems, "; ")));
  }

  const ParallelSizes& s = m.sizes_;
  const DimArray attn_size = {s.tp, s.cp, 1, s.dp, s.pp};
  const DimArray moe_size = {s.etp, 1, s.ep, m.edp_, s.pp};
  // Both meshes must cut the same pipeline groups: pp's stride (the product of the dimensions left
  // of it) must agree. Always true when pp is last or first. Megatron-Core additionally refuses
  // any non-pp-last order with dp ≠ edp; we accept every layout whose groups are identical.
  if (s.pp > 1) {
    std::vector<std::pair<const char*, int>> attn_left, moe_left;
    for (Dim d : order) {
      if (d == kPpDim) break;
      attn_left.push_back({kAttentionDimNames[d], attn_size[d]});
      moe_left.push_back({kMoeDimNames[d], moe_size[d]});
    }
    int64_t attn_stride = 1, moe_stride = 1;
    const std::string attn_text = Product(attn_left, &attn_stride);
    const std::string moe_text = Product(moe_left, &moe_stride);
    if (attn_stride != moe_stride) {
      return absl::InvalidArgumentError(
          absl::StrCat("parallel layout: order '", in.order, "' gives pp stride ", attn_text, " = ",
                       attn_stride, " in the attention mesh but ", moe_text, " = ", moe_stride,
                       " in the MoE mesh, so their pipeline groups would differ (put pp last)"));
    }
  }

  // Coordinates: rank = Σ coord_d · stride_d over the order.
  DimArray attn_stride{}, moe_stride{};
  int a = 1, e = 1;
  for (Dim d : order) {
    attn_stride[d] = a;
    moe_stride[d] = e;
    a *= attn_size[d];
    e *= moe_size[d];
  }
  std::vector<DimArray> attn_coords(world), moe_coords(world);
  for (int r = 0; r < world; ++r) {
    for (int d = 0; d < kNumDims; ++d) {
      attn_coords[r][d] = r / attn_stride[d] % attn_size[d];
      moe_coords[r][d] = r / moe_stride[d] % moe_size[d];
    }
    const DimArray& c = attn_coords[r];
    const DimArray& x = moe_coords[r];
    m.attention_.push_back({c[kTpDim], c[kCpDim], c[kDpDim], c[kPpDim]});
    m.moe_.push_back({x[kTpDim], x[kEpDim], x[kDpDim], x[kPpDim]});
  }

  // Groups: a rank's group is keyed by its base, the rank with the group's coordinates zeroed,
  // which is the group's smallest member; ranks are visited in order, so groups come out sorted
  // and ordered by smallest rank.
  m.groups_.resize(kNumKinds);
  m.group_index_.assign(kNumKinds, std::vector<int>(world, -1));
  std::vector<int> group_of_base(world);
  for (const KindSpec& spec : kSpecs) {
    if (spec.kind == GroupKind::kEmbedding) continue;  // built from the pp groups below
    const int k = static_cast<int>(spec.kind);
    const std::vector<DimArray>& coords = spec.moe ? moe_coords : attn_coords;
    const DimArray& stride = spec.moe ? moe_stride : attn_stride;
    std::fill(group_of_base.begin(), group_of_base.end(), -1);
    for (int r = 0; r < world; ++r) {
      int base = r;
      for (int d = 0; d < kNumDims; ++d) {
        if (spec.dims & (1u << d)) base -= coords[r][d] * stride[d];
      }
      int& g = group_of_base[base];
      if (g < 0) {
        g = static_cast<int>(m.groups_[k].size());
        m.groups_[k].emplace_back();
      }
      m.groups_[k][g].push_back(r);
      m.group_index_[k][r] = g;
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

AttentionCoords Mapping::attention_coords(int rank) const {
  MF_CHECK(rank >= 0 && rank < world_) << "rank " << rank << " of world " << world_;
  return attention_[rank];
}

MoeCoords Mapping::moe_coords(int rank) const {
  MF_CHECK(rank >= 0 && rank < world_) << "rank " << rank << " of world " << world_;
  return moe_[rank];
}

const std::vector<std::vector<int>>& Mapping::Groups(GroupKind kind) const {
  return groups_[static_cast<int>(SpecOf(kind).kind)];
}

int Mapping::GroupIndex(GroupKind kind, int rank) const {
  MF_CHECK(rank >= 0 && rank < world_) << "rank " << rank << " of world " << world_;
  return group_index_[static_cast<int>(SpecOf(kind).kind)][rank];
}

const std::vector<int>& Mapping::GroupOf(GroupKind kind, int rank) const {
  const int g = GroupIndex(kind, rank);
  if (g < 0) {
    // Ranks of middle pipeline stages belong to no embedding group.
    static const std::vector<int>* empty = new std::vector<int>();
    return *empty;
  }
  return groups_[static_cast<int>(kind)][g];
}

}  // namespace moefold::parallel
