// Gradient compressors: message sizes, hand values, error bounds, round trips, the contraction
// property, Top-K selection against a full sort, positive homogeneity and non-finite input.
#include "parallel/compressors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

std::vector<float> RoundTripOnce(const Compressor& c, const std::vector<float>& x) {
  std::vector<uint8_t> message(c.MessageBytes(static_cast<int64_t>(x.size())));
  std::vector<float> local(x.size(), 0.0f), remote(x.size(), 0.0f);
  c.Encode(x.data(), static_cast<int64_t>(x.size()), message.data(), local.data());
  c.DecodeAdd(message.data(), static_cast<int64_t>(x.size()), 1.0f, remote.data());
  // Bit for bit (NaN included): the sender's h and the owner's s must advance by the same values.
  EXPECT_EQ(std::memcmp(local.data(), remote.data(), 4 * x.size()), 0)
      << "sender and receiver must agree on what was sent";
  return remote;
}

std::vector<uint8_t> Message(const Compressor& c, const std::vector<float>& x) {
  std::vector<uint8_t> message(c.MessageBytes(static_cast<int64_t>(x.size())));
  std::vector<float> decoded(x.size(), 0.0f);
  c.Encode(x.data(), static_cast<int64_t>(x.size()), message.data(), decoded.data());
  return message;
}

// Block b's absmax of x.
float BlockAbsMax(const std::vector<float>& x, int block, size_t b) {
  float amax = 0;
  for (size_t i = b * block; i < std::min(x.size(), (b + 1) * block); ++i) {
    amax = std::max(amax, std::fabs(x[i]));
  }
  return amax;
}

// Random data whose scale changes by 1000× from block to block.
std::vector<float> RaggedData(int64_t n, uint64_t seed) {
  std::vector<float> v = testing::RandomNormal({n}, seed).ToVector();
  for (int64_t i = 0; i < n; ++i) v[i] *= std::pow(10.0f, static_cast<float>((i / 128) % 4) - 2);
  return v;
}

TEST(CompressorsTest, MessageSizes) {
  EXPECT_EQ((Compressor{CompressorKind::kIdentity}.MessageBytes(300)), 1200);
  EXPECT_EQ((Compressor{CompressorKind::kInt8, 128}.MessageBytes(300)), 300 + 3 * 4);
  EXPECT_EQ((Compressor{CompressorKind::kFp8, 128}.MessageBytes(256)), 256 + 2 * 4);
  // Top-K 1% of blocks of 128: round(1.28) = 1 pair per block, at least 1 for the short tail.
  EXPECT_EQ((Compressor{CompressorKind::kTopK, 128, 0.01f}.MessageBytes(300)), 3 * 8);
  EXPECT_EQ((Compressor{CompressorKind::kTopK, 100, 0.1f}.MessageBytes(200)), 20 * 8);
}

TEST(CompressorsTest, Int8HandValuesAndTies) {
  const Compressor c{CompressorKind::kInt8, 4};
  // Block 1: absmax 1.27 → scale 0.01; 0.005 is a tie at 0.5 → rounds to even 0.
  const auto y = RoundTripOnce(c, {1.27f, -0.5f, 0.005f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f});
  EXPECT_FLOAT_EQ(y[0], 1.27f);
  EXPECT_FLOAT_EQ(y[1], -0.5f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[4], 0.0f);  // an all-zero block decodes to zeros
}

TEST(CompressorsTest, QuantizersContractAndIdentityIsExact) {
  const Tensor x = testing::RandomNormal({4096}, 5);
  const std::vector<float> v = x.ToVector();
  double norm = 0;
  for (float a : v) norm += static_cast<double>(a) * a;
  for (CompressorKind kind : {CompressorKind::kInt8, CompressorKind::kFp8}) {
    const auto y = RoundTripOnce(Compressor{kind, 128}, v);
    double err = 0;
    for (size_t i = 0; i < v.size(); ++i) err += (y[i] - v[i]) * static_cast<double>(y[i] - v[i]);
    // ‖C(x) − x‖² ≤ (1 − α)‖x‖² (docs/FORMULAS.md §8.2): int8 α ≥ 0.998, E4M3 (3 mantissa bits)
    // α ≥ 0.99.
    EXPECT_LT(err, (kind == CompressorKind::kInt8 ? 0.002 : 0.01) * norm);
  }
  EXPECT_EQ(RoundTripOnce(Compressor{CompressorKind::kIdentity}, v), v);
}

TEST(CompressorsTest, TopKKeepsTheLargestOfEachBlock) {
  const Compressor c{CompressorKind::kTopK, 4, 0.5f};  // 2 of every 4
  const auto y = RoundTripOnce(c, {0.1f, -3.0f, 2.0f, 0.5f, 1.0f, 1.0f, -1.0f, 0.0f});
  EXPECT_EQ(y, (std::vector<float>{0.0f, -3.0f, 2.0f, 0.0f, 1.0f, 1.0f, 0.0f,
                                   0.0f}));  // ties: lower index
}

TEST(CompressorsTest, UnknownNamesAreRefused) {
  EXPECT_EQ(*ParseCompressor("fp8"), CompressorKind::kFp8);
  auto bad = ParseCompressor("int4");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("int4"), absl::string_view::npos);
}

}  // namespace
}  // namespace moefold::parallel

namespace moefold::parallel {
namespace {

TEST(CompressorsTest, Int8MessageLayoutAndExactTies) {
  // absmax 127 → scale exactly 1, so x/scale = x and the halves are exact ties: round half to even.
  const Compressor c{CompressorKind::kInt8, 4};
  const std::vector<float> x = {127.0f, 2.5f, -2.5f, 3.5f, 0.5f, 1.5f, -127.0f, 0.0f};
  const std::vector<uint8_t> m = Message(c, x);
  ASSERT_EQ(m.size(), 2 * 4 + 8u);  // two f32 scales, then eight int8 codes
  float scales[2];
  std::memcpy(scales, m.data(), 8);
  EXPECT_EQ(scales[0], 1.0f);
  EXPECT_EQ(scales[1], 1.0f);
  const std::vector<int8_t> codes(m.begin() + 8, m.end());
  EXPECT_EQ(codes, (std::vector<int8_t>{127, 2, -2, 4, 0, 2, -127, 0}));
  EXPECT_EQ(RoundTripOnce(c, x), (std::vector<float>{127, 2, -2, 4, 0, 2, -127, 0}));
}

TEST(CompressorsTest, Int8ErrorIsAtMostHalfAStep) {
  const Compressor c{CompressorKind::kInt8, 128};
  const std::vector<float> x = RaggedData(1000, 11);
  const std::vector<float> y = RoundTripOnce(c, x);
  for (size_t i = 0; i < x.size(); ++i) {
    const float scale = BlockAbsMax(x, 128, i / 128) / 127.0f;
    ASSERT_LE(std::fabs(y[i] - x[i]), 0.5f * scale * (1 + 1e-5f)) << "element " << i;
  }
}

TEST(CompressorsTest, Fp8HandValues) {
  // Block 1: absmax 448 → scale 1; 17 is a tie between 16 and 18 (3 mantissa bits) → 16 (even);
  // 0.3 → 0.3125. Block 2: scale 0.5; 0.1/0.5 = 0.2 → 0.203125 → 0.1015625.
  const Compressor c{CompressorKind::kFp8, 4};
  const std::vector<float> y =
      RoundTripOnce(c, {448.0f, 1.0f, 17.0f, -0.3f, 224.0f, 0.1f, 0.0f, -224.0f});
  EXPECT_EQ(y,
            (std::vector<float>{448.0f, 1.0f, 16.0f, -0.3125f, 224.0f, 0.1015625f, 0.0f, -224.0f}));
}

TEST(CompressorsTest, Fp8ErrorIsAtMostHalfAnUlp) {
  // E4M3: 3 mantissa bits → relative error ≤ 2⁻⁴ for normals (≥ 2⁻⁶ after scaling); below that
  // the subnormal spacing 2⁻⁹ gives an absolute error ≤ 2⁻¹⁰ of the scale.
  const Compressor c{CompressorKind::kFp8, 128};
  const std::vector<float> x = RaggedData(1000, 12);
  const std::vector<float> y = RoundTripOnce(c, x);
  for (size_t i = 0; i < x.size(); ++i) {
    const float scale = BlockAbsMax(x, 128, i / 128) / 448.0f;
    const float bound = std::max(std::ldexp(std::fabs(x[i]), -4), std::ldexp(scale, -10));
    ASSERT_LE(std::fabs(y[i] - x[i]), bound * (1 + 1e-5f)) << "element " << i;
  }
}

TEST(CompressorsTest, TopKMatchesAFullSortOnRandomData) {
  // Small integers make many ties in |x|: the lower index must win each of them.
  const Compressor c{CompressorKind::kTopK, 128, 0.05f};  // k = round(6.4) = 6, tail 104 → 5
  std::vector<float> x;
  for (int32_t v : testing::RandomInts({1000}, 13, 7).ToVector()) x.push_back(v - 3.0f);
  std::vector<float> expected(x.size(), 0.0f);
  for (size_t lo = 0; lo < x.size(); lo += 128) {
    const size_t hi = std::min(x.size(), lo + 128);
    std::vector<size_t> order(hi - lo);
    std::iota(order.begin(), order.end(), lo);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t i, size_t j) { return std::fabs(x[i]) > std::fabs(x[j]); });
    const size_t k = hi - lo == 128 ? 6 : 5;
    for (size_t t = 0; t < k; ++t) expected[order[t]] = x[order[t]];
  }
  EXPECT_EQ(c.MessageBytes(1000), (7 * 6 + 5) * 8);
  EXPECT_EQ(RoundTripOnce(c, x), expected);
}

TEST(CompressorsTest, CompressorsArePositivelyHomogeneous) {
  // C(a·x) = a·C(x) for a > 0 (exact for powers of two): what makes EF21-W EF21 on rescaled state.
  const std::vector<float> x = RaggedData(300, 14);
  std::vector<float> x4(x.size());
  for (size_t i = 0; i < x.size(); ++i) x4[i] = 4.0f * x[i];
  for (CompressorKind kind : {CompressorKind::kInt8, CompressorKind::kFp8, CompressorKind::kTopK}) {
    const Compressor c{kind, 128, 0.05f};
    std::vector<float> scaled = RoundTripOnce(c, x);
    for (float& v : scaled) v *= 4.0f;
    EXPECT_EQ(RoundTripOnce(c, x4), scaled) << static_cast<int>(kind);
  }
}

TEST(CompressorsTest, NonFiniteInputReachesTheReceiver) {
  // A NaN or Inf must not be quantized away: the block decodes to NaN (the anomaly check sees it),
  // the other blocks are untouched.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {nan, inf}) {
    for (CompressorKind kind : {CompressorKind::kInt8, CompressorKind::kFp8}) {
      const std::vector<float> y = RoundTripOnce(Compressor{kind, 4}, {1, bad, 2, 3, 1, 2, 3, 4});
      for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::isnan(y[i])) << static_cast<int>(kind) << i;
      for (int i = 4; i < 8; ++i) EXPECT_TRUE(std::isfinite(y[i])) << static_cast<int>(kind) << i;
    }
    const std::vector<float> y =
        RoundTripOnce(Compressor{CompressorKind::kTopK, 4, 0.25f}, {1, 5, 2, bad, 1, 2, 3, 4});
    EXPECT_FALSE(std::isfinite(y[3])) << "the non-finite entry is the one Top-K sends";
    EXPECT_EQ(y[1], 0.0f);
  }
}

}  // namespace
}  // namespace moefold::parallel
