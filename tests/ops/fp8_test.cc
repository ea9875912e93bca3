// CPU reference of the FP8 ops (ops/fp8.h): hand values of scales, casts and amaxes with zero,
// NaN, Inf, saturation and subnormal inputs; the transposed copy; blockwise round-trip bounds and
// refused block shapes; the delayed-scaling history step by step.
#include "ops/fp8.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::RandomNormal;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

uint32_t Bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

std::vector<uint8_t> Codes(const Tensor& t) {
  const uint8_t* p = t.data<uint8_t>();
  return std::vector<uint8_t>(p, p + t.numel());
}

TEST(Fp8Test, MaxOfEachFormat) {
  EXPECT_EQ(Fp8Max(DType::kFp8E4M3), 448.0f);
  EXPECT_EQ(Fp8Max(DType::kFp8E5M2), 57344.0f);
}

TEST(Fp8Test, ScaleFromAmaxHandValues) {
  EXPECT_EQ(Fp8ScaleFromAmax(2.0f, 448.0f, false, 1.0f), 224.0f);
  EXPECT_EQ(Fp8ScaleFromAmax(3.0f, 448.0f, false, 1.0f), 448.0f / 3.0f);
  EXPECT_EQ(Fp8ScaleFromAmax(3.0f, 448.0f, true, 1.0f), 128.0f);    // 149.3 rounded down
  EXPECT_EQ(Fp8ScaleFromAmax(1000.0f, 448.0f, true, 1.0f), 0.25f);  // 0.448 rounded down
  // Zero and non-finite amaxes keep the previous scale.
  EXPECT_EQ(Fp8ScaleFromAmax(0.0f, 448.0f, false, 7.0f), 7.0f);
  EXPECT_EQ(Fp8ScaleFromAmax(kNan, 448.0f, false, 7.0f), 7.0f);
  EXPECT_EQ(Fp8ScaleFromAmax(kInf, 448.0f, false, 7.0f), 7.0f);
  // A subnormal amax overflows the quotient: the largest finite scale stands in.
  EXPECT_EQ(Fp8ScaleFromAmax(1e-45f, 448.0f, false, 1.0f), FLT_MAX);
  EXPECT_EQ(Fp8ScaleFromAmax(1e-45f, 448.0f, true, 1.0f), std::ldexp(1.0f, 127));
}

TEST(Fp8Test, CastTransposeAmaxHandValues) {
  // x (2, 3): saturation (500 → 448), a subnormal E4M3 code (1e-3 → 2^-9), ±Inf → ±448, zero.
  const Tensor x = Tensor::FromVector({1.0f, -2.0f, 500.0f, 1e-3f, -kInf, 0.0f}, {2, 3});
  const Tensor scale = Tensor::FromVector({1.0f}, {1});
  Tensor y = Tensor::Empty({2, 3}, DType::kFp8E4M3), y_t = Tensor::Empty({3, 2}, DType::kFp8E4M3);
  Tensor amax = Tensor::FromVector({0.0f}, {1});
  CastTransposeAmax(x, scale, &y, &y_t, &amax, CpuStream());
  EXPECT_EQ(y.ToVector(),
            (std::vector<float>{1.0f, -2.0f, 448.0f, std::ldexp(1.0f, -9), -448.0f, 0.0f}));
  const std::vector<uint8_t> c = Codes(y);
  EXPECT_EQ(Codes(y_t), (std::vector<uint8_t>{c[0], c[3], c[1], c[4], c[2], c[5]}));
  EXPECT_EQ(amax.ToVector()[0], kInf);
}

TEST(Fp8Test, CastAppliesTheScaleAndAmaxAccumulates) {
  const Tensor x = Tensor::FromVector({0.5f, -0.25f, 3.0f, 1.0f}, {2, 2});
  const Tensor scale = Tensor::FromVector({100.0f}, {1});
  Tensor y = Tensor::Empty({2, 2}, DType::kFp8E4M3);
  Tensor amax = Tensor::FromVector({5.0f}, {1});
  CastTransposeAmax(x, scale, &y, nullptr, &amax, CpuStream());
  // E4M3 has 3 mantissa bits. 50 → 48 (spacing 4 in [32, 64): a tie, 48 has the even mantissa),
  // −25 → −24 (spacing 2: a tie), 300 → 288 (spacing 32), 100 → 96 (spacing 8: a tie).
  EXPECT_EQ(y.ToVector(), (std::vector<float>{48.0f, -24.0f, 288.0f, 96.0f}));
  EXPECT_EQ(amax.ToVector()[0], 5.0f);  // max(previous 5, |x| ≤ 3)
  amax.Fill(0.0f);
  CastTransposeAmax(x, scale, nullptr, nullptr, &amax, CpuStream());
  EXPECT_EQ(amax.ToVector()[0], 3.0f);
}

TEST(Fp8Test, NanMakesTheAmaxTheQuietNanAndTheCodeNan) {
  const Tensor x = Tensor::FromVector({1.0f, -kNan, kInf, 2.0f}, {2, 2});
  const Tensor scale = Tensor::FromVector({1.0f}, {1});
  for (DType format : {DType::kFp8E4M3, DType::kFp8E5M2}) {
    Tensor y = Tensor::Empty({2, 2}, format);
    Tensor amax = Tensor::FromVector({0.0f}, {1});
    CastTransposeAmax(x, scale, &y, nullptr, &amax, CpuStream());
    EXPECT_EQ(Bits(amax.ToVector()[0]), 0x7fc00000u) << DTypeName(format);
    const std::vector<float> v = y.ToVector();
    EXPECT_EQ(v[0], 1.0f);
    EXPECT_TRUE(std::isnan(v[1]));
    // −NaN·scale is the GPU's canonical +NaN: the code carries no sign.
    const uint8_t positive_nan =
        format == DType::kFp8E4M3 ? FloatToFp8E4M3(kNan) : FloatToFp8E5M2(kNan);
    EXPECT_EQ(Codes(y)[1], positive_nan);
    EXPECT_EQ(v[2], Fp8Max(format));  // SATFINITE: +Inf → +max
  }
}

TEST(Fp8Test, E5M2SaturatesAndKeepsSmallValues) {
  const Tensor x = Tensor::FromVector({60000.0f, -1e6f, 1.5e-5f, 3.0f}, {1, 4});
  Tensor y = Tensor::Empty({1, 4}, DType::kFp8E5M2);
  CastTransposeAmax(x, Tensor::FromVector({1.0f}, {1}), &y, nullptr, nullptr, CpuStream());
  // 1.5e-5 lies between the E5M2 subnormals 2^-16 (1.53e-5) and 2^-17: rounds to 2^-16.
  EXPECT_EQ(y.ToVector(), (std::vector<float>{57344.0f, -57344.0f, std::ldexp(1.0f, -16), 3.0f}));
}

TEST(Fp8Test, Bf16InputIsWidenedExactly) {
  const Tensor x = RandomNormal({5, 7}, 3, 4.0f);
  const Tensor x_bf16 = x.To(DType::kBF16);
  const Tensor scale = Tensor::FromVector({10.0f}, {1});
  Tensor y = Tensor::Empty({5, 7}, DType::kFp8E4M3),
         expected = Tensor::Empty({5, 7}, DType::kFp8E4M3);
  Tensor amax = Tensor::FromVector({0.0f}, {1}), amax_expected = Tensor::FromVector({0.0f}, {1});
  CastTransposeAmax(x_bf16, scale, &y, nullptr, &amax, CpuStream());
  CastTransposeAmax(x_bf16.To(DType::kF32), scale, &expected, nullptr, &amax_expected, CpuStream());
  EXPECT_EQ(Codes(y), Codes(expected));
  EXPECT_EQ(amax.ToVector(), amax_expected.ToVector());
}

TEST(Fp8Test, TransposeOfARaggedShape) {
  const int64_t m = 37, n = 70;
  const Tensor x = RandomNormal({m, n}, 5, 2.0f);
  const Tensor scale = Tensor::FromVector({50.0f}, {1});
  Tensor y = Tensor::Empty({m, n}, DType::kFp8E5M2), y_t = Tensor::Empty({n, m}, DType::kFp8E5M2);
  CastTransposeAmax(x, scale, &y, &y_t, nullptr, CpuStream());
  const std::vector<float> xv = x.ToVector();
  const std::vector<uint8_t> a = Codes(y), b = Codes(y_t);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      ASSERT_EQ(a[i * n + j], FloatToFp8E5M2(xv[i * n + j] * 50.0f)) << i << ", " << j;
      ASSERT_EQ(b[j * m + i], a[i * n + j]) << i << ", " << j;
    }
  }
}

TEST(Fp8Test, BlockwiseRefusesDimensionsByName) {
  Tensor q = Tensor::Empty({4, 200}, DType::kFp8E4M3);
  Tensor s = Tensor::Empty({4, 1}, DType::kF32);
  const absl::Status cols = QuantizeBlockwise(Tensor::Zeros({4, 200}, DType::kF32),
                                              kFp8ActivationTile, {}, &q, &s, CpuStream());
  EXPECT_EQ(cols.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cols.message().find("columns N = 200"), std::string::npos) << cols;
  Tensor qw = Tensor::Empty({100, 128}, DType::kFp8E4M3);
  Tensor sw = Tensor::Empty({1, 1}, DType::kF32);
  const absl::Status rows = QuantizeBlockwise(Tensor::Zeros({100, 128}, DType::kF32),
                                              kFp8WeightBlock, {}, &qw, &sw, CpuStream());
  EXPECT_EQ(rows.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rows.message().find("rows M = 100"), std::string::npos) << rows;
  Tensor x = Tensor::Empty({100, 128}, DType::kF32);
  const absl::Status deq = DequantizeBlockwise(qw, sw, kFp8WeightBlock, &x, CpuStream());
  EXPECT_EQ(deq.code(), absl::StatusCode::kInvalidArgument);
}

// x with magnitudes ×1000 apart between blocks: a per-tensor scale would flush the small blocks.
Tensor Ragged(int64_t m, int64_t n, const Fp8BlockShape& block, uint64_t seed) {
  std::vector<float> v = RandomNormal({m, n}, seed).ToVector();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t b = i / block.rows + j / block.cols;
      v[i * n + j] *= std::pow(10.0f, static_cast<float>(b % 3) * 3.0f - 3.0f);
    }
  }
  return Tensor::FromVector(v, {m, n});
}

struct RoundTripCase {
  Fp8BlockShape block;
  DType format;
  bool pow2;
};

class Fp8BlockwiseTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(Fp8BlockwiseTest, RoundTripWithinHalfAnUlp) {
  const RoundTripCase& c = GetParam();
  const int64_t m = 256, n = 384;
  const Tensor x = Ragged(m, n, c.block, 11);
  const int64_t bm = m / c.block.rows, bn = n / c.block.cols;
  Tensor q = Tensor::Empty({m, n}, c.format), s = Tensor::Empty({bm, bn}, DType::kF32);
  ASSERT_OK(QuantizeBlockwise(x, c.block, {.pow2 = c.pow2}, &q, &s, CpuStream()));
  Tensor back = Tensor::Empty({m, n}, DType::kF32);
  ASSERT_OK(DequantizeBlockwise(q, s, c.block, &back, CpuStream()));
  // Relative half-ulp of the format's mantissa, plus half the smallest subnormal code in the
  // block's units for values that land among the subnormals.
  const float rel = c.format == DType::kFp8E4M3 ? std::ldexp(1.0f, -4) : std::ldexp(1.0f, -3);
  const float sub = c.format == DType::kFp8E4M3 ? std::ldexp(1.0f, -10) : std::ldexp(1.0f, -17);
  const std::vector<float> xv = x.ToVector(), bv = back.ToVector(), sv = s.ToVector();
  for (int64_t b = 0; b < bm * bn; ++b) {
    if (c.pow2) {
      int e;
      EXPECT_EQ(std::frexp(sv[b], &e), 0.5f) << "block " << b << " scale_inv " << sv[b];
    }
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float scale_inv = sv[(i / c.block.rows) * bn + j / c.block.cols];
      const float x0 = xv[i * n + j], err = std::fabs(bv[i * n + j] - x0);
      ASSERT_LE(err, rel * std::fabs(x0) * 1.0001f + sub * scale_inv) << i << ", " << j;
    }
  }
  // The block's largest element maps onto the format's max (exactly, without pow2).
  if (!c.pow2) {
    float amax = 0;
    for (int64_t i = 0; i < c.block.rows; ++i) {
      for (int64_t j = 0; j < c.block.cols; ++j) amax = std::max(amax, std::fabs(xv[i * n + j]));
    }
    EXPECT_FLOAT_EQ(sv[0], 1.0f / (Fp8Max(c.format) / amax));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Blocks, Fp8BlockwiseTest,
    ::testing::Values(RoundTripCase{kFp8ActivationTile, DType::kFp8E4M3, false},
                      RoundTripCase{kFp8ActivationTile, DType::kFp8E4M3, true},
                      RoundTripCase{kFp8WeightBlock, DType::kFp8E4M3, false},
                      RoundTripCase{kFp8WeightBlock, DType::kFp8E4M3, true},
                      RoundTripCase{kFp8ActivationTile, DType::kFp8E5M2, false},
                      RoundTripCase{kFp8WeightBlock, DType::kFp8E5M2, true}));

TEST(Fp8Test, BlockwiseZeroAndNonFiniteBlocksKeepScaleOne) {
  // Three 1×4 tiles: zeros, one holding NaN, one holding Inf.
  const Tensor x = Tensor::FromVector({0, 0, 0, 0, 1, kNan, -2, 0, 3, kInf, -500, 0.5f}, {3, 4});
  Tensor q = Tensor::Empty({3, 4}, DType::kFp8E4M3), s = Tensor::Empty({3, 1}, DType::kF32);
  ASSERT_OK(QuantizeBlockwise(x, {1, 4}, {}, &q, &s, CpuStream()));
  EXPECT_EQ(s.ToVector(), (std::vector<float>{1.0f, 1.0f, 1.0f}));
  const std::vector<float> v = q.ToVector();
  EXPECT_EQ(std::vector<float>(v.begin(), v.begin() + 4), (std::vector<float>{0, 0, 0, 0}));
  EXPECT_EQ(v[4], 1.0f);
  EXPECT_TRUE(std::isnan(v[5]));
  EXPECT_EQ(v[6], -2.0f);
  EXPECT_EQ(std::vector<float>(v.begin() + 8, v.end()),
            (std::vector<float>{3.0f, 448.0f, -448.0f, 0.5f}));
}

TEST(Fp8Test, BlockwiseBf16InAndOut) {
  const Tensor x = Ragged(4, 256, kFp8ActivationTile, 21).To(DType::kBF16);
  Tensor q = Tensor::Empty({4, 256}, DType::kFp8E4M3), s = Tensor::Empty({4, 2}, DType::kF32);
  ASSERT_OK(QuantizeBlockwise(x, kFp8ActivationTile, {}, &q, &s, CpuStream()));
  Tensor q32 = Tensor::Empty({4, 256}, DType::kFp8E4M3), s32 = Tensor::Empty({4, 2}, DType::kF32);
  ASSERT_OK(QuantizeBlockwise(x.To(DType::kF32), kFp8ActivationTile, {}, &q32, &s32, CpuStream()));
  EXPECT_EQ(Codes(q), Codes(q32));
  EXPECT_EQ(s.ToVector(), s32.ToVector());
  Tensor back = Tensor::Empty({4, 256}, DType::kBF16),
         back32 = Tensor::Empty({4, 256}, DType::kF32);
  ASSERT_OK(DequantizeBlockwise(q, s, kFp8ActivationTile, &back, CpuStream()));
  ASSERT_OK(DequantizeBlockwise(q, s, kFp8ActivationTile, &back32, CpuStream()));
  EXPECT_EQ(back.ToVector(), back32.To(DType::kBF16).ToVector());
}

TEST(Fp8Test, UpdateScalesRollsTheHistory) {
  // T = 2 tensors, L = 3.
  Tensor amax = Tensor::FromVector({2.0f, 0.0f}, {2});
  Tensor history = Tensor::Zeros({3, 2}, DType::kF32);
  Tensor scale = Tensor::FromVector({1.0f, 1.0f}, {2}), scale_inv = Tensor::Empty({2}, DType::kF32);
  auto step = [&](std::vector<float> a) {
    amax = Tensor::FromVector(a, {2}).Clone();
    Fp8UpdateScales(448.0f, &amax, &history, &scale, &scale_inv, CpuStream());
    EXPECT_EQ(amax.ToVector(), (std::vector<float>{0.0f, 0.0f}));  // moved into the history
  };
  step({2.0f, 0.0f});
  EXPECT_EQ(history.ToVector(), (std::vector<float>{2, 0, 0, 0, 0, 0}));
  EXPECT_EQ(scale.ToVector(), (std::vector<float>{224.0f, 1.0f}));  // zero amax: scale kept
  EXPECT_EQ(scale_inv.ToVector(), (std::vector<float>{1.0f / 224.0f, 1.0f}));
  step({1.0f, 4.0f});
  EXPECT_EQ(history.ToVector(), (std::vector<float>{1, 4, 2, 0, 0, 0}));
  EXPECT_EQ(scale.ToVector(), (std::vector<float>{224.0f, 112.0f}));  // max over the history
  step({0.5f, kNan});
  step({0.5f, 1.0f});
  // Tensor 0: the 2 rolled out, max(0.5, 0.5, 1) = 1. Tensor 1: the NaN is still in the history.
  EXPECT_EQ(scale.ToVector()[0], 448.0f);
  EXPECT_EQ(scale.ToVector()[1], 112.0f);
  step({0.5f, 1.0f});
  EXPECT_EQ(scale.ToVector()[1], 112.0f);
  step({0.5f, 1.0f});  // the NaN has rolled out: max(1, 1, 1)
  EXPECT_EQ(scale.ToVector()[1], 448.0f);
  EXPECT_EQ(scale.ToVector()[0], 896.0f);
  step({kInf, 0.0f});  // an Inf keeps the scale too; tensor 1's max(0, 1, 1) = 1
  EXPECT_EQ(scale.ToVector(), (std::vector<float>{896.0f, 448.0f}));
}

TEST(Fp8Test, UpdateScalesWithoutHistoryUsesTheAmaxNow) {
  Tensor amax = Tensor::FromVector({4.0f, 0.0f, kNan}, {3});
  Tensor scale = Tensor::FromVector({1.0f, 2.0f, 3.0f}, {3}),
         scale_inv = Tensor::Empty({3}, DType::kF32);
  Fp8UpdateScales(57344.0f, &amax, nullptr, &scale, &scale_inv, CpuStream());
  EXPECT_EQ(scale.ToVector(), (std::vector<float>{14336.0f, 2.0f, 3.0f}));
  EXPECT_EQ(amax.ToVector()[0], 4.0f);  // not consumed
}

}  // namespace
}  // namespace moefold::ops
