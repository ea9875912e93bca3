// Tests of the LR schedules: Megatron-style warm-up values, cosine endpoints and midpoint, the WSD
// phases with 1-sqrt decay, constant, and validation messages.
#include "optim/lr_schedule.h"

#include <cmath>

#include "gmock/gmock.h"
#include "tests/testing/testing.h"

namespace moefold::optim {
namespace {

LrScheduleOptions Cosine() {
  return {.kind = "cosine", .lr = 1.0f, .min_lr = 0.1f, .warmup_steps = 4, .total_steps = 14};
}

TEST(LrScheduleTest, WarmupIsLinearFromLrOverWarmup) {
  const LrScheduleOptions o = Cosine();
  EXPECT_FLOAT_EQ(LearningRate(o, 0), 0.25f);  // step 0 gets lr·1/W
  EXPECT_FLOAT_EQ(LearningRate(o, 1), 0.5f);
  EXPECT_FLOAT_EQ(LearningRate(o, 2), 0.75f);
  EXPECT_FLOAT_EQ(LearningRate(o, 3), 1.0f);  // last warm-up step reaches lr
}

TEST(LrScheduleTest, CosineEndpointsAndMidpoint) {
  const LrScheduleOptions o = Cosine();  // decay over n = 4 … 14, i.e. steps 3 … 13
  EXPECT_FLOAT_EQ(LearningRate(o, 3), 1.0f);
  EXPECT_FLOAT_EQ(LearningRate(o, 8), 0.55f);  // n = 9: halfway, (lr + min_lr)/2
  // n = 6: ratio 0.2 → 0.1 + 0.45·(1 + cos(0.2π)).
  EXPECT_NEAR(LearningRate(o, 5), 0.1 + 0.45 * (1.0 + std::cos(0.2 * M_PI)), 1e-6);
  EXPECT_FLOAT_EQ(LearningRate(o, 13), 0.1f);  // the run's last step uses min_lr
  EXPECT_FLOAT_EQ(LearningRate(o, 20), 0.1f);  // and past the end stays there
  // Monotone decreasing after warm-up.
  for (int64_t s = 4; s < 14; ++s) EXPECT_LT(LearningRate(o, s), LearningRate(o, s - 1)) << s;
}

TEST(LrScheduleTest, WsdStableThenOneMinusSqrtDecay) {
  // T = 20, D = round(0.25·20) = 5: warm-up n ≤ 2, stable n ≤ 15, decay n = 16 … 20.
  const LrScheduleOptions o{.kind = "wsd",
                            .lr = 2.0f,
                            .min_lr = 0.0f,
                            .warmup_steps = 2,
                            .total_steps = 20,
                            .decay_fraction = 0.25f};
  EXPECT_FLOAT_EQ(LearningRate(o, 0), 1.0f);
  EXPECT_FLOAT_EQ(LearningRate(o, 1), 2.0f);
  EXPECT_FLOAT_EQ(LearningRate(o, 2), 2.0f);
  EXPECT_FLOAT_EQ(LearningRate(o, 14), 2.0f);  // n = 15, the last stable step
  EXPECT_NEAR(LearningRate(o, 15), 2.0 * (1.0 - std::sqrt(0.2)), 1e-6);
  EXPECT_NEAR(LearningRate(o, 17), 2.0 * (1.0 - std::sqrt(0.6)), 1e-6);
  EXPECT_FLOAT_EQ(LearningRate(o, 19), 0.0f);
}

TEST(LrScheduleTest, WsdDecaysToMinLr) {
  const LrScheduleOptions o{.kind = "wsd",
                            .lr = 1.0f,
                            .min_lr = 0.2f,
                            .warmup_steps = 0,
                            .total_steps = 10,
                            .decay_fraction = 0.5f};
  EXPECT_FLOAT_EQ(LearningRate(o, 0), 1.0f);  // no warm-up
  EXPECT_FLOAT_EQ(LearningRate(o, 4), 1.0f);
  EXPECT_NEAR(LearningRate(o, 5), 0.2 + 0.8 * (1.0 - std::sqrt(0.2)), 1e-6);
  EXPECT_FLOAT_EQ(LearningRate(o, 9), 0.2f);
}

TEST(LrScheduleTest, ConstantAfterWarmup) {
  const LrScheduleOptions o{
      .kind = "constant", .lr = 0.5f, .min_lr = 0.0f, .warmup_steps = 2, .total_steps = 5};
  EXPECT_FLOAT_EQ(LearningRate(o, 0), 0.25f);
  EXPECT_FLOAT_EQ(LearningRate(o, 1), 0.5f);
  EXPECT_FLOAT_EQ(LearningRate(o, 4), 0.5f);
  EXPECT_FLOAT_EQ(LearningRate(o, 100), 0.5f);
}

TEST(LrScheduleTest, ValidationNamesTheProblem) {
  EXPECT_OK(ValidateLrSchedule(Cosine()));
  LrScheduleOptions o = Cosine();
  o.kind = "linear";
  EXPECT_THAT(std::string(ValidateLrSchedule(o).message()), ::testing::HasSubstr("\"linear\""));
  o = Cosine();
  o.min_lr = 2.0f;
  EXPECT_THAT(std::string(ValidateLrSchedule(o).message()), ::testing::HasSubstr("min_lr"));
  o = Cosine();
  o.warmup_steps = 15;
  EXPECT_THAT(std::string(ValidateLrSchedule(o).message()), ::testing::HasSubstr("warmup_steps"));
  o = Cosine();
  o.total_steps = 0;
  EXPECT_THAT(std::string(ValidateLrSchedule(o).message()), ::testing::HasSubstr("total_steps"));
  o = {.kind = "wsd",
       .lr = 1.0f,
       .min_lr = 0.0f,
       .warmup_steps = 8,
       .total_steps = 10,
       .decay_fraction = 0.5f};
  EXPECT_THAT(std::string(ValidateLrSchedule(o).message()), ::testing::HasSubstr("exceed"));
  o.warmup_steps = 5;
  EXPECT_OK(ValidateLrSchedule(o));
  o.decay_fraction = 1.5f;
  EXPECT_THAT(std::string(ValidateLrSchedule(o).message()), ::testing::HasSubstr("decay_fraction"));
}

}  // namespace
}  // namespace moefold::optim
