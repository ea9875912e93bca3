// The folded rank mapping: the worked example of ALGORITHMS §0, golden tables worked out by hand,
// invariants over many layouts up to 4096 ranks, refusals with the arithmetic, and the formatters.
#include "parallel/mapping.h"

#include <set>

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

TEST(MappingTest, WorkedExampleOfAlgorithmsSection0) {
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
  EXPECT_EQ(m.Groups(GroupKind::kEtp).size(), 16u);  // singletons
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
  };
  for (const Layout& l : layouts) {
    const Mapping m = Make(l.world, l.sizes);
    const ParallelSizes& s = m.sizes();
    const std::vector<std::pair<GroupKind, int>> expected_sizes = {
        {GroupKind::kTp, s.tp}, {GroupKind::kCp, s.cp}, {GroupKind::kDp, s.dp},
        {GroupKind::kPp, s.pp}, {GroupKind::kTpCp, s.tp * s.cp}, {GroupKind::kDpCp, s.dp * s.cp},
        {GroupKind::kEtp, s.etp}, {GroupKind::kEp, s.ep}, {GroupKind::kEdp, m.edp()},
        {GroupKind::kEtpEp, s.etp * s.ep}, {GroupKind::kExpertPp, s.pp}};
    for (const auto& [kind, size] : expected_sizes) {
      const auto& groups = m.Groups(kind);
      ASSERT_EQ(static_cast<int>(groups.size()), l.world / size) << GroupKindName(kind);
      std::vector<int> seen(l.world, 0);
      for (const auto& g : groups) {
        ASSERT_EQ(static_cast<int>(g.size()), size) << GroupKindName(kind);
        for (int r : g) ++seen[r];
      }
      for (int r = 0; r < l.world; ++r) ASSERT_EQ(seen[r], 1) << GroupKindName(kind) << " rank " << r;
    }
    for (int r = 0; r < l.world; ++r) {
      ASSERT_EQ(m.GroupOf(GroupKind::kPp, r), m.GroupOf(GroupKind::kExpertPp, r));
      ASSERT_EQ(m.attention_coords(r).pp, m.moe_coords(r).pp);
      const auto& pp = m.GroupOf(GroupKind::kPp, r);
      const auto& emb = m.GroupOf(GroupKind::kEmbedding, r);
      const bool edge = r == pp.front() || r == pp.back();
      ASSERT_EQ(emb.empty(), !edge);
      if (edge) ASSERT_EQ(emb.front(), pp.front());
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
  expect_error(8, {.pp = 2, .order = "tp-pp-cp-ep-dp"}, "must end with pp");
  expect_error(8, {.tp = 0}, "tp must be >= 1");
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
  const std::string json = MappingToJson(m);
  EXPECT_NE(json.find("\"tp\": [[0,1],[2,3]]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"ep\": [[0,1],[2,3]]"), std::string::npos) << json;
  EXPECT_NE(json.find("\"edp\": [[0,2],[1,3]]"), std::string::npos) << json;
}

}  // namespace
}  // namespace moefold::parallel
