// `--search` on a small world: only layouts Validate() accepts, best first, each one's numbers the
// same as predicting its config alone; a model that fits nowhere is an error with the arithmetic.
#include "core/train/sim/layout_search.h"

#include "configs/config_loader.h"
#include "configs/validate.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::sim {
namespace {

config::ExperimentConfig Config() {
  auto c = config::LoadConfigFile("configs/tiny_moe.yaml", {"train.global_batch_size=16"});
  MF_CHECK(c.ok()) << c.status();
  return *c;
}

SearchOptions Options(int world, std::vector<int> micro_batch_sizes = {1, 2, 4}, int top = 10) {
  SearchOptions o;
  o.world = world;
  o.micro_batch_sizes = std::move(micro_batch_sizes);
  o.top = top;
  return o;
}

Cluster H100() {
  auto c = LoadCluster("h100_sxm_ib400");
  MF_CHECK(c.ok()) << c.status();
  return *c;
}

TEST(LayoutSearchTest, EnumeratesOnlyValidLayouts) {
  const auto layouts = EnumerateLayouts(Config(), H100(), Options(8));
  ASSERT_FALSE(layouts.empty());
  std::set<std::string> seen;
  for (const auto& c : layouts) {
    EXPECT_OK(config::Validate(c, 8));
    const auto& p = c.parallel();
    seen.insert(absl::StrCat(p.tp(), p.cp(), p.pp(), p.virtual_stages(), p.ep(), p.etp(),
                             c.train().micro_batch_size()));
  }
  EXPECT_EQ(seen.size(), layouts.size());  // no duplicates
  // tp 2 with ep 4 and pp 2 is among them; tp 3 cannot be (8 % 3).
  bool has = false;
  for (const auto& c : layouts) {
    has |= c.parallel().tp() == 2 && c.parallel().ep() == 4 && c.parallel().pp() == 2;
    EXPECT_NE(c.parallel().tp(), 3);
  }
  EXPECT_TRUE(has);
}

TEST(LayoutSearchTest, BestFirstAndEachAsPredictedAlone) {
  auto result = SearchLayouts(Config(), H100(), Options(8, {1, 2}));
  ASSERT_OK(result);
  ASSERT_EQ(result->best.size(), 10u);
  EXPECT_GT(result->valid, 10);
  for (size_t i = 0; i < result->best.size(); ++i) {
    EXPECT_OK(config::Validate(result->configs[i], 8));
    if (i > 0) {
      EXPECT_GE(result->best[i - 1].tokens_per_s, result->best[i].tokens_per_s);
    }
    auto alone = Predict(result->configs[i], 8, H100());
    ASSERT_OK(alone);
    EXPECT_EQ(alone->step_seconds, result->best[i].step_seconds);
    EXPECT_EQ(alone->layout, result->best[i].layout);
    EXPECT_TRUE(result->best[i].fits);
  }
}

TEST(LayoutSearchTest, AModelThatFitsNowhereIsAnError) {
  Cluster tiny = H100();
  tiny.hbm_gib = 1e-4;  // 100 KiB per GPU
  auto result = SearchLayouts(Config(), tiny, Options(4));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string msg(result.status().message());
  EXPECT_NE(msg.find("fits in memory"), std::string::npos) << msg;
  EXPECT_NE(msg.find("parameters"), std::string::npos) << msg;
  EXPECT_NE(msg.find("> 0 GiB"), std::string::npos) << msg;
  // No valid layout at all: a world the global batch cannot split over.
  auto none = SearchLayouts(Config(), H100(), Options(7, {1}));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.status().message()).find("passes validation"), std::string::npos);
}

}  // namespace
}  // namespace moefold::sim
