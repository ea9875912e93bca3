// Gradient compressors (ops/quant.h through parallel/compressors.h): message sizes, hand values,
// error bounds, round trips, the contraction property, Top-K selection against a full sort,
// positive homogeneity, non-finite input, and the ops against the host loops they replaced
// (bit for bit, including the EF21 update and the owner's member-order sum).
#include "parallel/compressors.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

Tensor HostTensor(const std::vector<float>& x) {
  return Tensor::FromVector(x, {static_cast<int64_t>(x.size())});
}

// Encodes x as one message (h starts at 0, so h returns the sender's decoding) and decodes it on
// the owner's side into zeros; both must agree bit for bit.
std::vector<float> RoundTripOnce(const Compressor& c, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  Tensor h = Tensor::Zeros({n}, DType::kF32), s = Tensor::Zeros({n}, DType::kF32);
  Tensor message = Tensor::Empty({1, c.MessageBytes(n)}, DType::kU8);
  ops::Ef21Encode(HostTensor(x), 1.0f, c, &h, &message, CpuStream());
  ops::Ef21DecodeSum(message, c, Tensor(), &s, CpuStream());
  // Bit for bit (NaN included): the sender's h and the owner's s must advance by the same values.
  EXPECT_EQ(std::memcmp(h.raw_data(), s.raw_data(), 4 * x.size()), 0)
      << "sender and receiver must agree on what was sent";
  return s.ToVector();
}

std::vector<uint8_t> Message(const Compressor& c, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  Tensor h = Tensor::Zeros({n}, DType::kF32);
  Tensor message = Tensor::Empty({1, c.MessageBytes(n)}, DType::kU8);
  ops::Ef21Encode(HostTensor(x), 1.0f, c, &h, &message, CpuStream());
  const uint8_t* bytes = message.data<uint8_t>();
  return std::vector<uint8_t>(bytes, bytes + message.numel());
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

// The host loops the ops replaced (parallel/compressors.cc and GradSync before the compressors
// became ops), kept here as the oracle: the ops must give their bits. Top-K messages then listed
// each block's pairs by decreasing |x|; the ops list them by index (the same pairs).
namespace legacy {

int64_t NumBlocks(int64_t n, int block) { return (n + block - 1) / block; }

float Magnitude(float x) {
  return std::isnan(x) ? std::numeric_limits<float>::infinity() : std::fabs(x);
}

void Encode(const Compressor& c, const float* x, int64_t n, uint8_t* out, float* decoded) {
  if (c.kind == CompressorKind::kIdentity) {
    std::memcpy(out, x, 4 * n);
    for (int64_t i = 0; i < n; ++i) decoded[i] += x[i];
    return;
  }
  if (c.kind == CompressorKind::kTopK) {
    std::vector<int64_t> order;
    for (int64_t b = 0; b < n; b += c.block) {
      const int64_t len = std::min<int64_t>(c.block, n - b), k = c.TopKPerBlock(len);
      order.resize(len);
      std::iota(order.begin(), order.end(), b);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t i, int64_t j) {
        const float ai = Magnitude(x[i]), aj = Magnitude(x[j]);
        return ai > aj || (ai == aj && i < j);
      });
      for (int64_t t = 0; t < k; ++t) {
        const int32_t index = static_cast<int32_t>(order[t]);
        std::memcpy(out, &index, 4);
        std::memcpy(out + 4, &x[index], 4);
        out += 8;
        decoded[index] += x[index];
      }
    }
    return;
  }
  const float qmax = c.kind == CompressorKind::kInt8 ? 127.0f : kFp8E4M3Max;
  const int64_t blocks = NumBlocks(n, c.block);
  uint8_t* codes = out + 4 * blocks;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * c.block, hi = std::min<int64_t>(n, lo + c.block);
    float amax = 0;
    bool finite = true;
    for (int64_t i = lo; i < hi; ++i) {
      amax = std::max(amax, std::fabs(x[i]));
      finite = finite && std::isfinite(x[i]);
    }
    const float scale = finite ? amax / qmax : std::numeric_limits<float>::quiet_NaN();
    std::memcpy(out + 4 * b, &scale, 4);
    for (int64_t i = lo; i < hi; ++i) {
      const float y = scale > 0 ? x[i] / scale : 0.0f;
      if (c.kind == CompressorKind::kInt8) {
        const float q = std::clamp(std::nearbyint(y), -127.0f, 127.0f);
        codes[i] = static_cast<uint8_t>(static_cast<int8_t>(q));
        decoded[i] += q * scale;
      } else {
        codes[i] = FloatToFp8E4M3(y);
        decoded[i] += Fp8E4M3ToFloat(codes[i]) * scale;
      }
    }
  }
}

void DecodeAdd(const Compressor& c, const uint8_t* message, int64_t n, float weight, float* acc) {
  if (c.kind == CompressorKind::kIdentity) {
    for (int64_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, message + 4 * i, 4);
      acc[i] += weight * v;
    }
    return;
  }
  if (c.kind == CompressorKind::kTopK) {
    const int64_t pairs = c.MessageBytes(n) / 8;
    for (int64_t t = 0; t < pairs; ++t) {
      int32_t index;
      float v;
      std::memcpy(&index, message + 8 * t, 4);
      std::memcpy(&v, message + 8 * t + 4, 4);
      acc[index] += weight * v;
    }
    return;
  }
  const int64_t blocks = NumBlocks(n, c.block);
  const uint8_t* codes = message + 4 * blocks;
  for (int64_t b = 0; b < blocks; ++b) {
    float scale;
    std::memcpy(&scale, message + 4 * b, 4);
    const int64_t lo = b * c.block, hi = std::min<int64_t>(n, lo + c.block);
    for (int64_t i = lo; i < hi; ++i) {
      const float q = c.kind == CompressorKind::kInt8
                          ? static_cast<float>(static_cast<int8_t>(codes[i]))
                          : Fp8E4M3ToFloat(codes[i]);
      acc[i] += weight * (q * scale);
    }
  }
}

// GradSync's sender: δ = v·scale − h, then one message per part, h += decoded.
std::vector<uint8_t> Send(const Compressor& c, const std::vector<float>& v, float scale,
                          int64_t parts, std::vector<float>* h) {
  const int64_t size = static_cast<int64_t>(v.size()), n = size / parts;
  std::vector<float> delta(size);
  for (int64_t i = 0; i < size; ++i) delta[i] = v[i] * scale - (*h)[i];
  const int64_t bytes = c.MessageBytes(n);
  std::vector<uint8_t> out(parts * bytes);
  for (int64_t p = 0; p < parts; ++p) {
    Encode(c, delta.data() + p * n, n, out.data() + p * bytes, h->data() + p * n);
  }
  return out;
}

// GradSync's owner: the members' pieces summed in member order from 0, then added to s.
void Receive(const Compressor& c, const std::vector<uint8_t>& messages, int64_t members,
             const std::vector<float>& weights, std::vector<float>* s) {
  const int64_t n = static_cast<int64_t>(s->size()), bytes = c.MessageBytes(n);
  std::vector<float> sum(n, 0.0f);
  for (int64_t m = 0; m < members; ++m) {
    DecodeAdd(c, messages.data() + m * bytes, n, weights.empty() ? 1.0f : weights[m], sum.data());
  }
  for (int64_t i = 0; i < n; ++i) (*s)[i] += sum[i];
}

// A Top-K message with each block's pairs put in index order.
std::vector<uint8_t> InIndexOrder(const Compressor& c, std::vector<uint8_t> message, int64_t n) {
  uint8_t* at = message.data();
  for (int64_t lo = 0; lo < n; lo += c.block) {
    const int64_t k = c.TopKPerBlock(std::min<int64_t>(c.block, n - lo));
    std::vector<std::array<uint8_t, 8>> pairs(k);
    std::memcpy(pairs.data(), at, 8 * k);
    std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) {
      int32_t ia, ib;
      std::memcpy(&ia, a.data(), 4);
      std::memcpy(&ib, b.data(), 4);
      return ia < ib;
    });
    std::memcpy(at, pairs.data(), 8 * k);
    at += 8 * k;
  }
  return message;
}

}  // namespace legacy

// Same bits, except that NaNs match any NaN and ±0 match (the ops decode a code of −0 as +0 on
// both sides; the host loop added the sender's −0).
void ExpectSameFloats(const std::vector<float>& actual, const std::vector<float>& expected,
                      const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    const float a = actual[i], e = expected[i];
    const bool same =
        (std::isnan(a) && std::isnan(e)) || (a == 0 && e == 0) || std::memcmp(&a, &e, 4) == 0;
    ASSERT_TRUE(same) << what << " element " << i << ": " << a << " vs " << e;
  }
}

// Data for the comparison: ragged magnitudes, exact ties (small integers), and, with `poison`, a
// NaN and an Inf in separate blocks.
std::vector<float> OracleData(int64_t n, uint64_t seed, bool poison) {
  std::vector<float> v = RaggedData(n, seed);
  for (int64_t i = 0; i < n; i += 7) v[i] = static_cast<float>((i / 7) % 5) - 2.0f;
  if (poison) {
    v[n / 3] = std::numeric_limits<float>::quiet_NaN();
    v[n - 2] = std::numeric_limits<float>::infinity();
  }
  return v;
}

TEST(CompressorsTest, OpsEqualTheHostLoopsTheyReplaced) {
  for (CompressorKind kind : {CompressorKind::kIdentity, CompressorKind::kInt8,
                              CompressorKind::kFp8, CompressorKind::kTopK}) {
    for (int block : {4, 100, 128}) {
      for (int64_t n : {256, 300}) {
        for (int64_t parts : {1, 3}) {
          for (float scale : {1.0f, 0.6f}) {
            for (bool poison : {false, true}) {
              const Compressor c{kind, block, 0.05f};
              const std::string what =
                  absl::StrCat("kind ", static_cast<int>(kind), " block ", block, " n ", n,
                               " parts ", parts, " scale ", scale, poison ? " poisoned" : "");
              const int64_t size = n * parts, bytes = c.MessageBytes(n);
              // Three members, each with its own gradient and h.
              std::vector<uint8_t> old_all, new_all;
              for (int64_t m = 0; m < 3; ++m) {
                const std::vector<float> v = OracleData(size, 100 + m, poison && m == 1);
                std::vector<float> h_old = RaggedData(size, 200 + m);
                Tensor h = HostTensor(h_old);
                std::vector<uint8_t> old_message = legacy::Send(c, v, scale, parts, &h_old);
                Tensor message = Tensor::Empty({parts, bytes}, DType::kU8);
                ops::Ef21Encode(HostTensor(v), scale, c, &h, &message, CpuStream());
                ExpectSameFloats(h.ToVector(), h_old, what + " h");
                if (kind == CompressorKind::kTopK) {
                  for (int64_t p = 0; p < parts; ++p) {
                    std::vector<uint8_t> piece(old_message.begin() + p * bytes,
                                               old_message.begin() + (p + 1) * bytes);
                    piece = legacy::InIndexOrder(c, piece, n);
                    std::copy(piece.begin(), piece.end(), old_message.begin() + p * bytes);
                  }
                }
                const uint8_t* fresh = message.data<uint8_t>();
                ASSERT_EQ(std::vector<uint8_t>(fresh, fresh + message.numel()), old_message)
                    << what << " member " << m;
                // The owner of part 0 receives every member's part 0.
                old_all.insert(old_all.end(), old_message.begin(), old_message.begin() + bytes);
                new_all.insert(new_all.end(), fresh, fresh + bytes);
              }
              for (const std::vector<float>& weights :
                   {std::vector<float>{}, std::vector<float>{0.7f, 1.3f, 1.0f}}) {
                std::vector<float> s_old = RaggedData(n, 300);
                Tensor s = HostTensor(s_old);
                legacy::Receive(c, old_all, 3, weights, &s_old);
                Tensor received = Tensor::Empty({3, bytes}, DType::kU8);
                std::memcpy(received.raw_data(), new_all.data(), new_all.size());
                const Tensor w = weights.empty() ? Tensor() : HostTensor(weights);
                ops::Ef21DecodeSum(received, c, w, &s, CpuStream());
                ExpectSameFloats(s.ToVector(), s_old, what + " s");
              }
            }
          }
        }
      }
    }
  }
}

TEST(CompressorsTest, TopKListsEachBlocksPairsInIndexOrder) {
  const Compressor c{CompressorKind::kTopK, 4, 0.5f};  // 2 of every 4
  const std::vector<uint8_t> m = Message(c, {0.1f, -3.0f, 2.0f, 5.0f, 1.0f, 1.0f, -1.0f, 0.0f});
  ASSERT_EQ(m.size(), 4 * 8u);
  std::vector<int32_t> indices;
  for (size_t t = 0; t < 4; ++t) {
    int32_t index;
    std::memcpy(&index, m.data() + 8 * t, 4);
    indices.push_back(index);
  }
  EXPECT_EQ(indices, (std::vector<int32_t>{1, 3, 4, 5}));  // block 1's tie: the lower indices
}

TEST(CompressorsDeathTest, ACorruptTopKIndexIsRefused) {
  const Compressor c{CompressorKind::kTopK, 4, 0.25f};
  std::vector<uint8_t> m = Message(c, {1, 2, 3, 4, 5, 6, 7, 8});
  const int32_t outside = 2;  // block 1 holds [4, 8)
  std::memcpy(m.data() + 8, &outside, 4);
  Tensor received = Tensor::Empty({1, static_cast<int64_t>(m.size())}, DType::kU8);
  std::memcpy(received.raw_data(), m.data(), m.size());
  Tensor s = Tensor::Zeros({8}, DType::kF32);
  EXPECT_DEATH(ops::Ef21DecodeSum(received, c, Tensor(), &s, CpuStream()), "corrupt Top-K");
}

}  // namespace
}  // namespace moefold::parallel
