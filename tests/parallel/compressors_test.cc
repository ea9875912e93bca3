// Gradient compressors: message sizes, hand values, round trips, the contraction property and Top-K
// selection.
#include "parallel/compressors.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

std::vector<float> RoundTripOnce(const Compressor& c, const std::vector<float>& x) {
  std::vector<uint8_t> message(c.MessageBytes(static_cast<int64_t>(x.size())));
  std::vector<float> local(x.size(), 0.0f), remote(x.size(), 0.0f);
  c.Encode(x.data(), static_cast<int64_t>(x.size()), message.data(), local.data());
  c.DecodeAdd(message.data(), static_cast<int64_t>(x.size()), 1.0f, remote.data());
  EXPECT_EQ(local, remote) << "sender and receiver must agree on what was sent";
  return remote;
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
    // ‖C(x) − x‖² ≤ (1 − α)‖x‖²: int8 α ≥ 0.998 (ALGORITHMS §4), E4M3 (3 mantissa bits) α ≥ 0.99.
    EXPECT_LT(err, (kind == CompressorKind::kInt8 ? 0.002 : 0.01) * norm);
  }
  EXPECT_EQ(RoundTripOnce(Compressor{CompressorKind::kIdentity}, v), v);
}

TEST(CompressorsTest, TopKKeepsTheLargestOfEachBlock) {
  const Compressor c{CompressorKind::kTopK, 4, 0.5f};  // 2 of every 4
  const auto y = RoundTripOnce(c, {0.1f, -3.0f, 2.0f, 0.5f, 1.0f, 1.0f, -1.0f, 0.0f});
  EXPECT_EQ(y, (std::vector<float>{0.0f, -3.0f, 2.0f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f}));  // ties: lower index
}

TEST(CompressorsTest, UnknownNamesAreRefused) {
  EXPECT_EQ(*ParseCompressor("fp8"), CompressorKind::kFp8);
  auto bad = ParseCompressor("int4");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("int4"), absl::string_view::npos);
}

}  // namespace
}  // namespace moefold::parallel
