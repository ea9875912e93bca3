// DType conversions: every fp8 code, sweeps of bf16/f16 patterns, rounding ties and saturation.
#include "core/dtype.h"

#include <cmath>
#include <cstring>

#include "gtest/gtest.h"

namespace moefold {
namespace {

float BitsToFloat(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

struct Fp8Format {
  uint8_t (*encode)(float);
  float (*decode)(uint8_t);
  float max;
  bool has_inf;
};

class Fp8Test : public ::testing::TestWithParam<Fp8Format> {};

TEST_P(Fp8Test, EveryCodeRoundTrips) {
  const Fp8Format f = GetParam();
  for (int code = 0; code < 256; ++code) {
    const float x = f.decode(static_cast<uint8_t>(code));
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(f.decode(f.encode(x)))) << code;
      continue;
    }
    if (std::isinf(x)) {
      // SATFINITE turns inf into the largest finite value of the same sign.
      EXPECT_EQ(f.decode(f.encode(x)), std::copysign(f.max, x)) << code;
      continue;
    }
    EXPECT_EQ(f.encode(x), code) << "value " << x;
  }
}

TEST_P(Fp8Test, MidpointsRoundToEvenAndNeighboursRoundToNearest) {
  const Fp8Format f = GetParam();
  for (int code = 0; code < 127; ++code) {
    const float lo = f.decode(static_cast<uint8_t>(code));
    const float hi = f.decode(static_cast<uint8_t>(code + 1));
    if (!std::isfinite(lo) || !std::isfinite(hi)) continue;
    const float mid = 0.5f * (lo + hi);  // exact in f32 for fp8 neighbours
    const int even = (code % 2 == 0) ? code : code + 1;
    EXPECT_EQ(f.encode(mid), even) << "midpoint of " << lo << " and " << hi;
    EXPECT_EQ(f.encode(-mid), even | 0x80) << "negative midpoint of " << lo << " and " << hi;
    EXPECT_EQ(f.encode(std::nextafter(mid, lo)), code);
    EXPECT_EQ(f.encode(std::nextafter(mid, hi)), code + 1);
  }
}

TEST_P(Fp8Test, SaturatesBeyondMax) {
  const Fp8Format f = GetParam();
  for (float x : {f.max * 1.01f, f.max * 4.0f, 1e30f, INFINITY}) {
    EXPECT_EQ(f.decode(f.encode(x)), f.max) << x;
    EXPECT_EQ(f.decode(f.encode(-x)), -f.max) << x;
  }
  EXPECT_TRUE(std::isnan(f.decode(f.encode(NAN))));
  // Values below half the smallest subnormal flush to signed zero.
  const float tiny = f.decode(1) * 0.49f;
  EXPECT_EQ(f.encode(tiny), 0);
  EXPECT_EQ(f.encode(-tiny), 0x80);
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8Test,
                         ::testing::Values(Fp8Format{FloatToFp8E4M3, Fp8E4M3ToFloat, 448.0f, false},
                                           Fp8Format{FloatToFp8E5M2, Fp8E5M2ToFloat, 57344.0f, true}));

TEST(Fp8Test, KnownCodes) {
  EXPECT_EQ(Fp8E4M3ToFloat(0x7E), 448.0f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7F)));
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(Fp8E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(Fp8E5M2ToFloat(0x7B), 57344.0f);
  EXPECT_TRUE(std::isinf(Fp8E5M2ToFloat(0x7C)));
  EXPECT_EQ(Fp8E5M2ToFloat(0x01), std::ldexp(1.0f, -16));
  EXPECT_EQ(Fp8E5M2ToFloat(0x3C), 1.0f);
}

// Reference bf16 rounding computed in double: nearest representable, ties to even mantissa.
uint16_t ReferenceBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t lower = u & 0xFFFF0000u;
  const uint32_t upper = lower + 0x10000u;
  const double dl = std::fabs(static_cast<double>(BitsToFloat(lower)) - x);
  // Past the largest finite value the next bf16 step is 2^128 (which is stored as inf).
  const double upper_value = (upper & 0x7F800000u) == 0x7F800000u
                                 ? std::copysign(std::ldexp(1.0, 128), x)
                                 : static_cast<double>(BitsToFloat(upper));
  const double du = std::fabs(upper_value - x);
  if (dl < du) return lower >> 16;
  if (du < dl) return upper >> 16;
  return ((lower >> 16) & 1) ? upper >> 16 : lower >> 16;
}

TEST(Bf16Test, SweepMatchesNearestEven) {
  // Every 2^16-th f32 pattern offset by a varying low half, covering ties, carries and all exponents.
  for (uint32_t hi = 0; hi < 0x10000; ++hi) {
    for (uint32_t low : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, (hi * 2654435761u) & 0xFFFFu}) {
      const uint32_t u = hi << 16 | low;
      const float x = BitsToFloat(u);
      if (std::isnan(x)) {
        EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(x))));
        continue;
      }
      if (std::isinf(x) || (hi & 0x7F80) == 0x7F80) continue;
      const uint16_t expected = ReferenceBf16(x);
      ASSERT_EQ(FloatToBf16(x), expected) << std::hex << u;
    }
  }
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(3.4e38f))));  // rounds past the max -> inf, as CUDA
  EXPECT_EQ(FloatToBf16(NAN), 0x7FFF);
}

TEST(F16Test, EveryCodeRoundTripsAndMidpointsTieToEven) {
  for (uint32_t code = 0; code < 0x10000; ++code) {
    const float x = F16ToFloat(static_cast<uint16_t>(code));
    if (std::isnan(x)) {
      EXPECT_EQ(FloatToF16(x), 0x7FFF);
      continue;
    }
    ASSERT_EQ(FloatToF16(x), code) << x;
    if ((code & 0x7FFF) >= 0x7BFF) continue;  // no finite upper neighbour
    const float next = F16ToFloat(static_cast<uint16_t>(code + 1));
    const float mid = 0.5f * (x + next);
    const uint32_t even = (code % 2 == 0) ? code : code + 1;
    ASSERT_EQ(FloatToF16(mid), even) << "midpoint " << mid;
  }
  EXPECT_EQ(F16ToFloat(FloatToF16(65504.0f)), 65504.0f);
  EXPECT_EQ(F16ToFloat(FloatToF16(65519.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(F16ToFloat(FloatToF16(65520.0f))));  // overflow -> inf, as __float2half
}

TEST(DTypeTest, NamesParseBack) {
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kFp8E4M3, DType::kFp8E5M2,
                  DType::kI32, DType::kI64, DType::kU8}) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, d);
  }
  auto bad = ParseDType("fp4");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("fp4"), std::string::npos);
}

}  // namespace
}  // namespace moefold
