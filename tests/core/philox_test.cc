// Philox4x32-10 against the Random123 known-answer vectors, and stream offsets.
#include "core/philox.h"

#include <cmath>

#include "gtest/gtest.h"

namespace moefold {
namespace {

TEST(PhiloxTest, KnownAnswers) {
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, 0, 0),
            (PhiloxBlock{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(Philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu),
            (PhiloxBlock{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(Philox4x32({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u, 0x299f31d0u),
            (PhiloxBlock{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(PhiloxTest, StreamResumesFromOffset) {
  PhiloxStream a(42, 7);
  for (int i = 0; i < 13; ++i) a.NextU32();
  PhiloxStream b(42, 7, a.offset());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.NextU32(), b.NextU32());
}

TEST(PhiloxTest, SubsequencesDifferAndNormalsLookNormal) {
  PhiloxStream a(1, 0), b(1, 1);
  int same = 0;
  for (int i = 0; i < 100; ++i) same += a.NextU32() == b.NextU32();
  EXPECT_LT(same, 3);
  PhiloxStream n(3, 0);
  double sum = 0, sq = 0;
  const int count = 100000;
  for (int i = 0; i < count; ++i) {
    const double x = n.Normal();
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sq += x * x;
  }
  EXPECT_NEAR(sum / count, 0.0, 0.02);
  EXPECT_NEAR(sq / count, 1.0, 0.02);
}

}  // namespace
}  // namespace moefold
