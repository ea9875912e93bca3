// The published model configs load, validate on the world their header names, and have the sizes
// the vendors publish (total and active parameters, core/train/flops.h's CountParameters).
#include <cstdint>
#include <string>

#include "configs/config_loader.h"
#include "configs/validate.h"
#include "core/train/sim/predict.h"
#include "core/train/flops.h"
#include "core/train/model_from_config.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold {
namespace {

struct Row {
  const char* file;
  int world;
  double total_b, active_b;  // published, billions
};

TEST(ModelConfigsTest, LoadValidateAndHaveThePublishedSizes) {
  for (const Row& row : {Row{"configs/models/mixtral_8x22b.yaml", 128, 141, 39},
                         Row{"configs/models/qwen2_57b_a14b.yaml", 64, 57.4, 14.2},
                         Row{"configs/models/qwen3_235b_a22b.yaml", 256, 235, 22},
                         Row{"configs/models/qwen3_30b_a3b.yaml", 8, 30.5, 3.3},
                         Row{"configs/models/mixtral_mini.yaml", 1, 2.5, 0.85},
                         Row{"configs/models/finegrained_mini.yaml", 1, 2.7, 0.55}}) {
    SCOPED_TRACE(row.file);
    auto c = config::LoadConfigFile(row.file, {});
    ASSERT_OK(c);
    EXPECT_OK(config::Validate(*c, row.world));
    auto spec = train::ModelSpecFromConfig(*c);
    ASSERT_OK(spec);
    const train::ParameterCounts n = train::CountParameters(*spec);
    EXPECT_NEAR(n.total / 1e9, row.total_b, 0.03 * row.total_b);
    EXPECT_NEAR(n.active / 1e9, row.active_b, 0.06 * row.active_b);
    auto cluster = sim::LoadCluster("h100_sxm_ib400");
    ASSERT_OK(cluster);
    auto p = sim::Predict(*c, row.world, *cluster);
    ASSERT_OK(p);
    EXPECT_GT(p->mfu, 0);
  }
}

}  // namespace
}  // namespace moefold
