// Tests of the SPAM and Stable-SPAM host math against hand-computed values: the reset and clip
// schedule, SPAM's cosine ramp after a reset, AdaClip's bias-corrected threshold and AdaGN's factor.
#include "optim/spam.h"

#include <cmath>

#include "tests/testing/testing.h"

namespace moefold::optim {
namespace {

TEST(SpamTest, ResetClipAndRampSchedule) {
  SpamOptions o{.kind = SpamKind::kSpam, .reset_interval = 10, .clip_delay = 2,
                .warmup_steps = 4, .warmup_start = 0.01f};
  EXPECT_FALSE(SpamResetsAt(o, 1));  // the start is no reset
  EXPECT_TRUE(SpamResetsAt(o, 11));
  EXPECT_TRUE(SpamResetsAt(o, 21));
  EXPECT_FALSE(SpamResetsAt(o, 12));
  EXPECT_FALSE(SpamClipsAt(o, 2));  // phase 1 < 2
  EXPECT_TRUE(SpamClipsAt(o, 3));
  EXPECT_FALSE(SpamClipsAt(o, 12));
  EXPECT_TRUE(SpamClipsAt(o, 13));
  EXPECT_EQ(SpamLrScale(o, 1), 1.0f);  // no ramp at the start
  // After the reset at step 11: k = 0, 1, 2, 3 → 0.01 + 0.99·(1 − cos(πk/4))/2, then 1.
  EXPECT_FLOAT_EQ(SpamLrScale(o, 11), 0.01f);
  EXPECT_NEAR(SpamLrScale(o, 12), 0.01 + 0.99 * (1 - std::cos(M_PI / 4)) / 2, 1e-6);
  EXPECT_NEAR(SpamLrScale(o, 13), 0.505, 1e-6);
  EXPECT_EQ(SpamLrScale(o, 15), 1.0f);
  o.kind = SpamKind::kStableSpam;
  EXPECT_EQ(SpamLrScale(o, 11), 1.0f);
}

TEST(SpamTest, AdaClipThresholdIsTheBiasCorrectedMaxEma) {
  SpamOptions o{.gamma3 = 0.5f};
  SpamTensorState s;
  // Step 1: m_max = 0.5·4 = 2, m̂ = 2/0.5 = 4 = max: nothing above it (factor 1).
  auto [c1, f1] = AdaClip(o, 1, 4.0, &s);
  EXPECT_FLOAT_EQ(c1, 4.0f);
  EXPECT_FLOAT_EQ(f1, 1.0f);
  // Step 2, max 16: m_max = 0.5·2 + 0.5·16 = 9, m̂ = 9/0.75 = 12; entries above 12 scaled by 12/16.
  auto [c2, f2] = AdaClip(o, 2, 16.0, &s);
  EXPECT_DOUBLE_EQ(s.m_max, 9.0);
  EXPECT_FLOAT_EQ(c2, 12.0f);
  EXPECT_FLOAT_EQ(f2, 0.75f);
}

TEST(SpamTest, AdaGnNormalisesToTheNormEma) {
  SpamOptions o{.gamma1 = 0.5f, .gamma2 = 0.5f, .eps = 0.0f};
  SpamTensorState s;
  // Step 1: m̂ = 2, v̂ = 4: factor 2/(2·2) = 1/2 (g becomes a unit vector × 1).
  EXPECT_FLOAT_EQ(AdaGn(o, 1, 2.0, &s), 0.5f);
  // Step 2, ‖g‖ = 4: m = 0.5 + 2 = 2.5 → m̂ = 2.5/0.75; v = 1 + 8 = 9 → v̂ = 12; factor
  // (10/3)/(sqrt(12)·4).
  EXPECT_NEAR(AdaGn(o, 2, 4.0, &s), (10.0 / 3) / (std::sqrt(12.0) * 4), 1e-7);
  EXPECT_EQ(AdaGn(o, 3, 0.0, &s), 1.0f);  // a zero gradient stays zero
}

}  // namespace
}  // namespace moefold::optim
