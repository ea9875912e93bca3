// The folded rank mapping: the worked example of docs/FORMULAS.md §1, golden tables worked out by
// hand, invariants over many layouts up to 4096 ranks, refusals with the arithmetic, and the
// formatters.
#include "parallel/mapping.h"

#include <algorithm>
#include <array>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "parallel/mapping_format.h"

namespace moefold::parallel {
namespace {

using Groups = std::vector<std::vector<int>>;

Mapping Make(int world, ParallelSizes sizes) {
  auto m = Mapping::Create(world, sizes);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

TEST(MappingTest, WorkedExampleOfTheFormulas) {
  // W = 16, attention TP2·CP2·DP2·PP2, MoE ETP1·EP4·EDP2·PP2.
  const Mapping m = Make(16, {.tp = 2, .cp = 2, .pp = 2, .etp = 1, .ep = 4});
  EXPECT_EQ(m.sizes().dp, 2);
  EXPECT_EQ(m.edp(), 2);
  EXPECT_EQ(m.Groups(GroupKind::kTp),
            (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}}));
  EXPECT_EQ(m.Groups(GroupKind::kCp),
            (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}, {12, 14}, {13, 15}}));
  EXPECT_EQ(m.Groups(GroupKind::kDp),
            (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}}));
  EXPECT_EQ(m.Groups(GroupKind::kDpCp),
            (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}, {8, 10, 12, 14}, {9, 11, 13, 15}}));
  EXPECT_EQ(m.Groups(GroupKind::kTpCp),
            (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}}));
  EXPECT_EQ(m.Groups(GroupKind::kPp),
            (Groups{{0, 8}, {1, 9}, {2, 10}, {3, 11}, {4, 12}, {5, 13}, {6, 14}, {7, 15}}));
  EXPECT_EQ(m.Groups(GroupKind::kEtp).size(), 16u);                 // singletons
  EXPECT_EQ(m.Groups(GroupKind::kEp), m.Groups(GroupKind::kTpCp));  // the point of folding
  EXPECT_EQ(m.Groups(GroupKind::kEdp),
            (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}, {8, 12}, {9, 13}, {10, 14}, {11, 15}}));
  EXPECT_EQ(m.Groups(GroupKind::kEmbedding),
            (Groups{{0, 8}, {1, 9}, {2, 10}, {3, 11}, {4, 12}, {5, 13}, {6, 14}, {7, 15}}));
  EXPECT_EQ(m.GroupOf(GroupKind::kEp, 5), (std::vector<int>{4, 5, 6, 7}));
  const AttentionCoords a = m.attention_coords(13);  // 13 = 1·1 + 0·2 + 1·4 + 1·8
  EXPECT_EQ(a.tp, 1);
  EXPECT_EQ(a.cp, 0);
  EXPECT_EQ(a.dp, 1);
  EXPECT_EQ(a.pp, 1);
  const MoeCoords e = m.moe_coords(13);  // 13 = 1·1 (ep) + 1·4 (edp) + 1·8 (pp)
  EXPECT_EQ(e.ep, 1);
  EXPECT_EQ(e.edp, 1);
  EXPECT_EQ(e.pp, 1);
}

TEST(MappingTest, GoldenAttentionTp2Dp4MoeEp4) {
  // W = 8. Attention strides: tp 1, dp 2. MoE (etp 1): ep stride 1 (size 4), edp stride 4 (size 2).
  const Mapping m = Make(8, {.tp = 2, .ep = 4});
  EXPECT_EQ(m.Groups(GroupKind::kTp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kDp), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kDpCp), m.Groups(GroupKind::kDp));
  EXPECT_EQ(m.Groups(GroupKind::kEp), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEdp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEtpEp), m.Groups(GroupKind::kEp));
}

TEST(MappingTest, GoldenTp2Cp2Dp2WithEtp2Ep2) {
  // W = 8. Attention: tp 1, cp 2, dp 4. MoE: etp stride 1, ep stride 2, edp stride 4.
  const Mapping m = Make(8, {.tp = 2, .cp = 2, .etp = 2, .ep = 2});
  EXPECT_EQ(m.Groups(GroupKind::kCp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kDp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kDpCp), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEtp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEdp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEtpEp), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
}

TEST(MappingTest, GoldenPp3Tp2Dp2WithEp4) {
  // W = 12. Attention: tp 1, dp 2, pp 4 (size 3). MoE: ep stride 1 (size 4), edp 1, pp 4.
  const Mapping m = Make(12, {.tp = 2, .pp = 3, .ep = 4});
  EXPECT_EQ(m.Groups(GroupKind::kDp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}, {8, 10}, {9, 11}}));
  EXPECT_EQ(m.Groups(GroupKind::kPp), (Groups{{0, 4, 8}, {1, 5, 9}, {2, 6, 10}, {3, 7, 11}}));
  EXPECT_EQ(m.Groups(GroupKind::kEmbedding), (Groups{{0, 8}, {1, 9}, {2, 10}, {3, 11}}));
  EXPECT_TRUE(m.GroupOf(GroupKind::kEmbedding, 5).empty());  // a middle stage
  EXPECT_EQ(m.Groups(GroupKind::kEp), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}}));
  EXPECT_EQ(m.Groups(GroupKind::kEdp).size(), 12u);
  EXPECT_EQ(m.Groups(GroupKind::kModelParallel),
            (Groups{{0, 1, 4, 5, 8, 9}, {2, 3, 6, 7, 10, 11}}));
}

TEST(MappingTest, GoldenNonDefaultOrder) {
  // W = 8, order dp-tp-cp-ep-pp. Attention: dp stride 1, tp 2, cp 4. MoE (ep 2): edp stride 1
  // (size 4), ep stride 4.
  const Mapping m = Make(8, {.tp = 2, .cp = 2, .ep = 2, .order = "dp-tp-cp-ep-pp"});
  EXPECT_EQ(m.Groups(GroupKind::kTp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kDp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kCp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEdp), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
}

TEST(MappingTest, GoldenPipelineFirstOrder) {
  // W = 8, order pp-tp-cp-ep-dp, pp 2, tp 2 (dp 2), ep 4 (edp 1). pp varies fastest, so its stride
  // is 1 in both meshes and the pipeline groups agree although dp 2 ≠ edp 1 (Megatron-Core would
  // refuse any non-pp-last order with dp ≠ edp). Attention strides: pp 1, tp 2, dp 4.
  // MoE strides: pp 1, ep 2 (etp, cp and edp are 1).
  const Mapping m = Make(8, {.tp = 2, .pp = 2, .ep = 4, .order = "pp-tp-cp-ep-dp"});
  EXPECT_EQ(m.Groups(GroupKind::kPp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kExpertPp), m.Groups(GroupKind::kPp));
  EXPECT_EQ(m.Groups(GroupKind::kEmbedding), m.Groups(GroupKind::kPp));
  EXPECT_EQ(m.Groups(GroupKind::kTp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kDp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kModelParallel), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEp), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  EXPECT_EQ(m.Groups(GroupKind::kEdp).size(), 8u);
  EXPECT_EQ(m.moe_coords(6).ep, 3);        // 6 = 0·1 (pp) + 3·2 (ep)
  EXPECT_EQ(m.attention_coords(6).dp, 1);  // 6 = 0·1 (pp) + 1·2 (tp) + 1·4 (dp)
  EXPECT_EQ(m.attention_coords(6).tp, 1);
}

// The reference the sweep compares against, written from the definition: enumerate every
// coordinate tuple, rank = Σ coordᵢ·Π_{j<i} sizeⱼ in the order; a group of kind D holds the ranks
// whose coordinates agree outside D. Dimensions are indexed tp 0, cp 1, ep 2, dp 3, pp 4.
constexpr std::array<const char*, 5> kDims = {"tp", "cp", "ep", "dp", "pp"};
using Coords = std::array<int, 5>;

struct Oracle {
  std::vector<Coords> attention, moe;  // [rank]

  Oracle(int world, const ParallelSizes& s, int dp, int edp) : attention(world), moe(world) {
    std::vector<int> order;
    for (absl::string_view name : absl::StrSplit(s.order, '-')) {
      order.push_back(
          static_cast<int>(std::find(kDims.begin(), kDims.end(), name) - kDims.begin()));
    }
    Fill(order, {s.tp, s.cp, 1, dp, s.pp}, &attention);
    Fill(order, {s.etp, 1, s.ep, edp, s.pp}, &moe);
  }
  static void Fill(const std::vector<int>& order, const Coords& size, std::vector<Coords>* out) {
    Coords c = {0, 0, 0, 0, 0};
    for (size_t n = 0; n < out->size(); ++n) {
      int rank = 0, stride = 1;
      for (int d : order) {
        rank += c[d] * stride;
        stride *= size[d];
      }
      (*out)[rank] = c;
      for (size_t i = 0; i < order.size() && ++c[order[i]] == size[order[i]]; ++i) c[order[i]] = 0;
    }
  }
  // `varying`: bit d set when dimension d may differ inside the group.
  std::vector<int> Group(bool use_moe, unsigned varying, int r) const {
    const auto& coords = use_moe ? moe : attention;
    std::vector<int> group;
    for (int q = 0; q < static_cast<int>(coords.size()); ++q) {
      bool same = true;
      for (int d = 0; d < 5; ++d) same &= ((varying >> d) & 1) != 0 || coords[q][d] == coords[r][d];
      if (same) group.push_back(q);
    }
    return group;
  }
};

// Each group kind and the dimensions that vary inside it (bits as in Oracle), from the brief's
// definitions rather than from the implementation's table.
constexpr unsigned kTpBit = 1, kCpBit = 2, kEpBit = 4, kDpBit = 8, kPpBit = 16;
const std::vector<std::pair<GroupKind, unsigned>>& KindDims() {
  static const auto* kinds = new std::vector<std::pair<GroupKind, unsigned>>{
      {GroupKind::kTp, kTpBit},
      {GroupKind::kCp, kCpBit},
      {GroupKind::kDp, kDpBit},
      {GroupKind::kPp, kPpBit},
      {GroupKind::kTpCp, kTpBit | kCpBit},
      {GroupKind::kDpCp, kDpBit | kCpBit},
      {GroupKind::kTpCpDp, kTpBit | kCpBit | kDpBit},
      {GroupKind::kModelParallel, kTpBit | kPpBit},
      {GroupKind::kEtp, kTpBit},
      {GroupKind::kEp, kEpBit},
      {GroupKind::kEdp, kDpBit},
      {GroupKind::kEtpEp, kTpBit | kEpBit},
      {GroupKind::kExpertPp, kPpBit}};
  return *kinds;
}

// Every (world, sizes) with W ∈ {1, 2, 4, 6, 8, 12, 16} whose products divide W, under several
// orders: pp last, pp first, pp in the middle.
std::vector<std::pair<int, ParallelSizes>> SmallLayouts() {
  const std::vector<std::string> orders = {"tp-cp-ep-dp-pp", "tp-cp-dp-ep-pp", "dp-ep-cp-tp-pp",
                                           "pp-tp-cp-ep-dp", "tp-cp-ep-pp-dp", "tp-pp-cp-ep-dp"};
  std::vector<std::pair<int, ParallelSizes>> layouts;
  for (int w : {1, 2, 4, 6, 8, 12, 16}) {
    for (int tp = 1; tp <= w; ++tp) {
      for (int cp = 1; tp * cp <= w; ++cp) {
        for (int pp = 1; tp * cp * pp <= w; ++pp) {
          for (int etp = 1; etp * pp <= w; ++etp) {
            for (int ep = 1; etp * ep * pp <= w; ++ep) {
              if (w % (tp * cp * pp) != 0 || w % (etp * ep * pp) != 0) continue;
              for (const std::string& order : orders) {
                layouts.push_back(
                    {w, {.tp = tp, .cp = cp, .pp = pp, .etp = etp, .ep = ep, .order = order}});
              }
            }
          }
        }
      }
    }
  }
  return layouts;
}

TEST(MappingTest, EveryGroupMatchesTheDefinitionOverManySmallLayouts) {
  int checked = 0, refused = 0;
  for (const auto& [world, sizes] : SmallLayouts()) {
    const ParallelSizes& s = sizes;
    const std::string where = absl::StrCat("W ", world, " tp ", s.tp, " cp ", s.cp, " pp ", s.pp,
                                           " etp ", s.etp, " ep ", s.ep, " ", s.order);
    const Oracle oracle(world, s, world / (s.tp * s.cp * s.pp), world / (s.etp * s.ep * s.pp));
    // Refused exactly when the two meshes' pipeline groups differ.
    bool pp_agree = true;
    for (int r = 0; r < world; ++r) {
      pp_agree &= oracle.Group(false, kPpBit, r) == oracle.Group(true, kPpBit, r);
    }
    auto m = Mapping::Create(world, s);
    ASSERT_EQ(m.ok(), pp_agree) << where << " " << m.status();
    if (!m.ok()) {
      EXPECT_NE(m.status().message().find("pipeline groups would differ"), absl::string_view::npos);
      ++refused;
      continue;
    }
    ++checked;
    for (int r = 0; r < world; ++r) {
      const AttentionCoords a = m->attention_coords(r);
      const MoeCoords e = m->moe_coords(r);
      const Coords& oa = oracle.attention[r];
      const Coords& oe = oracle.moe[r];
      ASSERT_EQ((Coords{a.tp, a.cp, 0, a.dp, a.pp}), (Coords{oa[0], oa[1], 0, oa[3], oa[4]}))
          << where << " rank " << r;
      ASSERT_EQ((Coords{e.etp, 0, e.ep, e.edp, e.pp}), (Coords{oe[0], 0, oe[2], oe[3], oe[4]}))
          << where << " rank " << r;
      for (const auto& [kind, varying] : KindDims()) {
        ASSERT_EQ(m->GroupOf(kind, r), oracle.Group(IsMoeGroup(kind), varying, r))
            << where << " " << GroupKindName(kind) << " rank " << r;
      }
      // Embedding: the first and last stage of the rank's pipeline group; middle stages none.
      std::vector<int> embedding;
      const bool edge = oa[4] == 0 || oa[4] == s.pp - 1;
      for (int q : oracle.Group(false, kPpBit, r)) {
        const int stage = oracle.attention[q][4];
        if (edge && (stage == 0 || stage == s.pp - 1)) embedding.push_back(q);
      }
      ASSERT_EQ(m->GroupOf(GroupKind::kEmbedding, r), embedding) << where << " rank " << r;
    }
    for (GroupKind kind : kAllGroupKinds) {
      const auto& groups = m->Groups(kind);
      for (size_t g = 0; g < groups.size(); ++g) {
        ASSERT_TRUE(std::is_sorted(groups[g].begin(), groups[g].end())) << where;
        if (g > 0) {
          ASSERT_LT(groups[g - 1].front(), groups[g].front()) << where;
        }
        for (int r : groups[g]) ASSERT_EQ(m->GroupIndex(kind, r), static_cast<int>(g)) << where;
      }
    }
  }
  EXPECT_GT(checked, 1000);  // the sweep covers real ground ...
  EXPECT_GT(refused, 10);    // ... including orders whose pipeline groups would differ
}

TEST(MappingTest, InvariantsHoldUpTo4096Ranks) {
  struct Layout {
    int world;
    ParallelSizes sizes;
  };
  const std::vector<Layout> layouts = {
      {1, {}},
      {6, {.tp = 3, .ep = 2}},
      {64, {.tp = 2, .cp = 2, .pp = 2, .etp = 2, .ep = 4}},
      {96, {.tp = 4, .cp = 1, .pp = 3, .etp = 1, .ep = 8}},
      {1024, {.tp = 8, .cp = 2, .pp = 4, .etp = 1, .ep = 16}},
      {4096, {.tp = 8, .cp = 2, .pp = 8, .etp = 2, .ep = 32, .order = "tp-cp-dp-ep-pp"}},
      {4096, {.tp = 4, .cp = 4, .pp = 4, .etp = 1, .ep = 16, .order = "tp-cp-ep-pp-dp"}},
      {2048, {.tp = 2, .pp = 16, .etp = 1, .ep = 64, .order = "pp-tp-cp-ep-dp"}},
  };
  for (const Layout& l : layouts) {
    const Mapping m = Make(l.world, l.sizes);
    const ParallelSizes& s = m.sizes();
    const std::vector<std::pair<GroupKind, int>> expected_sizes = {
        {GroupKind::kTp, s.tp},
        {GroupKind::kCp, s.cp},
        {GroupKind::kDp, s.dp},
        {GroupKind::kPp, s.pp},
        {GroupKind::kTpCp, s.tp * s.cp},
        {GroupKind::kDpCp, s.dp * s.cp},
        {GroupKind::kTpCpDp, s.tp * s.cp * s.dp},
        {GroupKind::kModelParallel, s.tp * s.pp},
        {GroupKind::kEtp, s.etp},
        {GroupKind::kEp, s.ep},
        {GroupKind::kEdp, m.edp()},
        {GroupKind::kEtpEp, s.etp * s.ep},
        {GroupKind::kExpertPp, s.pp}};
    for (const auto& [kind, size] : expected_sizes) {
      const auto& groups = m.Groups(kind);
      ASSERT_EQ(static_cast<int>(groups.size()), l.world / size) << GroupKindName(kind);
      std::vector<int> seen(l.world, 0);
      for (const auto& g : groups) {
        ASSERT_EQ(static_cast<int>(g.size()), size) << GroupKindName(kind);
        for (int r : g) ++seen[r];
      }
      for (int r = 0; r < l.world; ++r)
        ASSERT_EQ(seen[r], 1) << GroupKindName(kind) << " rank " << r;
    }
    ASSERT_EQ(m.Groups(GroupKind::kEmbedding).size(), m.Groups(GroupKind::kPp).size());
    for (int r = 0; r < l.world; ++r) {
      ASSERT_EQ(m.GroupOf(GroupKind::kPp, r), m.GroupOf(GroupKind::kExpertPp, r));
      ASSERT_EQ(m.attention_coords(r).pp, m.moe_coords(r).pp);
      const auto& pp = m.GroupOf(GroupKind::kPp, r);
      const auto& emb = m.GroupOf(GroupKind::kEmbedding, r);
      const bool edge = r == pp.front() || r == pp.back();
      ASSERT_EQ(emb.empty(), !edge);
      if (edge) {
        ASSERT_EQ(emb.front(), pp.front());
        ASSERT_EQ(emb.back(), pp.back());
      }
    }
  }
}

TEST(MappingTest, RefusalsShowTheArithmetic) {
  auto expect_error = [](int world, ParallelSizes sizes, const std::string& text) {
    auto m = Mapping::Create(world, sizes);
    ASSERT_FALSE(m.ok()) << text;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find(text), absl::string_view::npos) << m.status();
  };
  expect_error(12, {.tp = 2, .pp = 4}, "world 12 is not divisible by tp 2 × cp 1 × pp 4 = 8");
  expect_error(8, {.tp = 2, .dp = 2}, "world 8 != tp 2 × cp 1 × dp 2 × pp 1 = 4");
  expect_error(16, {.tp = 2, .cp = 2, .pp = 2, .ep = 3}, "etp 1 × ep 3 × pp 2 = 6");
  expect_error(8, {.order = "tp-cp-dp-pp"}, "must name each of tp, cp, ep, dp, pp");
  expect_error(8, {.order = "tp-tp-ep-dp-pp"}, "must name each of tp, cp, ep, dp, pp");
  expect_error(8, {.order = "tp-cp-ep-dp-xx"}, "must name each of tp, cp, ep, dp, pp");
  expect_error(8, {.order = "tp-cp-ep-dp-pp-tp"}, "must name each of tp, cp, ep, dp, pp");
  expect_error(8, {.order = ""}, "must name each of tp, cp, ep, dp, pp");
  // pp left of other dimensions: its stride must agree between the meshes.
  expect_error(8, {.tp = 2, .pp = 2, .ep = 2, .order = "tp-pp-cp-ep-dp"},
               "pp stride tp 2 = 2 in the attention mesh but etp 1 = 1 in the MoE mesh");
  expect_error(
      16, {.tp = 2, .cp = 2, .pp = 2, .ep = 2, .order = "tp-cp-ep-pp-dp"},
      "pp stride tp 2 × cp 2 × ep 1 = 4 in the attention mesh but etp 1 × cp 1 × ep 2 = 2");
  expect_error(8, {.tp = 0}, "tp must be >= 1");
  expect_error(8, {.dp = -1}, "dp must be >= 0");
  expect_error(0, {}, "world size must be >= 1");
  // Every problem is listed, not only the first.
  expect_error(12, {.tp = 5, .ep = 7}, "world 12 is not divisible by etp 1 × ep 7 × pp 1 = 7");
  expect_error(12, {.tp = 5, .ep = 7}, "world 12 is not divisible by tp 5 × cp 1 × pp 1 = 5");
}

TEST(MappingFormatTest, TablesGroupsAndJson) {
  const Mapping m = Make(4, {.tp = 2, .ep = 2});
  const std::string table = FormatMeshTables(m);
  EXPECT_NE(table.find("attention mesh: tp 2 × cp 1 × dp 2 × pp 1"), std::string::npos) << table;
  EXPECT_NE(table.find("MoE mesh:       etp 1 × ep 2 × edp 2 × pp 1"), std::string::npos);
  EXPECT_NE(table.find("    3 |   1   0   1   0 |   0   1   1   0"), std::string::npos) << table;
  const std::string groups = FormatRankGroups(m, 3);
  EXPECT_NE(groups.find("dp-cp"), std::string::npos);
  EXPECT_NE(groups.find("[1,3]"), std::string::npos) << groups;
  const std::string json = MappingToJson(m).Dump();
  EXPECT_NE(json.find("\"tp\": [[0, 1], [2, 3]]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"ep\": [[0, 1], [2, 3]]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"edp\": [[0, 2], [1, 3]]"), std::string::npos) << json;
  EXPECT_EQ(json.rfind("{\"world\": 4, \"order\": \"tp-cp-ep-dp-pp\", \"sizes\": {\"tp\": 2", 0),
            0u)
      << json;
  EXPECT_NE(json.find("\"embedding\": [[0], [1], [2], [3]]"), std::string::npos) << json;
  EXPECT_LT(json.find("\"attention\": {"), json.find("\"moe\": {")) << json;
  EXPECT_EQ(json.back(), '}');
}

TEST(MappingFormatTest, LargeWorldsAndMiddleStages) {
  const Mapping m = Make(96, {.tp = 2, .pp = 3, .ep = 4});
  const std::string table = FormatMeshTables(m);
  EXPECT_NE(table.find("   63 |"), std::string::npos) << table;
  EXPECT_EQ(table.find("   64 |"), std::string::npos) << table;
  EXPECT_NE(table.find("... 32 more ranks"), std::string::npos) << table;
  // Rank 40 is on the middle stage (pp stride 32): no embedding group.
  const std::string groups = FormatRankGroups(m, 40);
  EXPECT_NE(groups.find("embedding       (none)"), std::string::npos) << groups;
  EXPECT_NE(groups.find("pp              [8,40,72]"), std::string::npos) << groups;
}

}  // namespace
}  // namespace moefold::parallel
