// CPU reference of the FP8 GEMM (ops/fp8_gemm.h) against hand values and against dequantise-then-
// multiply in double; the padded transpose; refused shapes; and the fast path of the CPU's FP8
// cast against core/dtype.h's general conversion at every rounding boundary of the normal range.
#include "ops/fp8_gemm.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "ops/fp8.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::RandomNormal;

Tensor Codes(const std::vector<float>& values, const Shape& shape, DType format) {
  return Tensor::FromVector(values, shape).To(format);
}

TEST(Fp8GemmTest, PerTensorHandValues) {
  // a = [[1, 2], [3, 4]]·(1/2), b = [[1, 0], [0.5, -1]]·4: c = (a_codes·b_codesᵀ)·(1/2)·4.
  const Tensor a = Codes({1, 2, 3, 4}, {2, 2}, DType::kFp8E4M3);
  const Tensor b = Codes({1, 0, 0.5f, -1}, {2, 2}, DType::kFp8E5M2);
  const Tensor sa = Tensor::FromVector({0.5f}, {1}), sb = Tensor::FromVector({4.0f}, {1});
  Tensor c = Tensor::FromVector({10, 20, 30, 40}, {2, 2});
  ASSERT_TRUE(Fp8Gemm(a, sa, b, sb, {}, 0.0f, &c, CpuStream()).ok());
  EXPECT_EQ(c.ToVector(), (std::vector<float>{2, -3, 6, -5}));
  ASSERT_TRUE(Fp8Gemm(a, sa, b, sb, {}, 1.0f, &c, CpuStream()).ok());
  EXPECT_EQ(c.ToVector(), (std::vector<float>{4, -6, 12, -10}));
}

TEST(Fp8GemmTest, BlockwiseScalesEachKBlockSeparately) {
  // K = 256: two blocks; a's rows have their own scales per block (1×128 tiles), b one 128×128
  // block scale per K block. All codes 1: each block sums to 128.
  const int64_t k = 256;
  const Tensor a = Codes(std::vector<float>(2 * k, 1.0f), {2, k}, DType::kFp8E4M3);
  const Tensor b = Codes(std::vector<float>(1 * k, 1.0f), {1, k}, DType::kFp8E4M3);
  const Tensor sa = Tensor::FromVector({1, 2, 3, 4}, {2, 2});
  const Tensor sb = Tensor::FromVector({0.5f, 0.25f}, {1, 2});
  Tensor c = Tensor::Empty({2, 1}, DType::kF32);
  ASSERT_TRUE(Fp8Gemm(a, sa, b, sb, {.block_k = 128}, 0.0f, &c, CpuStream()).ok());
  // row 0: 128·1·0.5 + 128·2·0.25 = 128; row 1: 128·3·0.5 + 128·4·0.25 = 320.
  EXPECT_EQ(c.ToVector(), (std::vector<float>{128, 320}));
}

TEST(Fp8GemmTest, EqualsDequantisedProductOnRandomBlocks) {
  const int64_t m = 5, n = 256, k = 384;
  const Tensor x = RandomNormal({m, k}, 1), w = RandomNormal({n, k}, 2);
  Tensor qx = Tensor::Empty({m, k}, DType::kFp8E4M3), sx = Tensor::Empty({m, 3}, DType::kF32);
  Tensor qw = Tensor::Empty({n, k}, DType::kFp8E4M3), sw = Tensor::Empty({2, 3}, DType::kF32);
  ASSERT_TRUE(QuantizeBlockwise(x, kFp8ActivationTile, {}, &qx, &sx, CpuStream()).ok());
  ASSERT_TRUE(QuantizeBlockwise(w, kFp8WeightBlock, {}, &qw, &sw, CpuStream()).ok());
  Tensor dx = Tensor::Empty({m, k}, DType::kF32), dw = Tensor::Empty({n, k}, DType::kF32);
  ASSERT_TRUE(DequantizeBlockwise(qx, sx, kFp8ActivationTile, &dx, CpuStream()).ok());
  ASSERT_TRUE(DequantizeBlockwise(qw, sw, kFp8WeightBlock, &dw, CpuStream()).ok());
  Tensor c = Tensor::Empty({m, n}, DType::kF32);
  ASSERT_TRUE(Fp8Gemm(qx, sx, qw, sw, {.block_k = 128}, 0.0f, &c, CpuStream()).ok());
  const std::vector<float> got = c.ToVector(), a = dx.ToVector(), b = dw.ToVector();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double want = 0, mag = 0;
      for (int64_t l = 0; l < k; ++l) {
        want += static_cast<double>(a[i * k + l]) * b[j * k + l];
        mag += std::fabs(static_cast<double>(a[i * k + l]) * b[j * k + l]);
      }
      EXPECT_NEAR(got[i * n + j], want, 1e-5 * mag) << i << "," << j;
    }
  }
}

TEST(Fp8GemmTest, BadShapesAreRefusedByName) {
  const Tensor a = Tensor::Zeros({4, 96}, DType::kFp8E4M3), b = Tensor::Zeros({2, 96},
                                                                              DType::kFp8E4M3);
  const Tensor one = Tensor::FromVector({1.0f}, {1});
  Tensor c = Tensor::Empty({4, 2}, DType::kF32);
  const absl::Status block = Fp8Gemm(a, one, b, one, {.block_k = 128}, 0.0f, &c, CpuStream());
  EXPECT_EQ(block.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(block.message().find("K = 96 is not a multiple of the block size 128"),
            absl::string_view::npos);
  Tensor wrong = Tensor::Empty({3, 2}, DType::kF32);
  EXPECT_NE(Fp8Gemm(a, one, b, one, {}, 0.0f, &wrong, CpuStream()).message().find("does not fit c"),
            absl::string_view::npos);
  const Tensor two_scales = Tensor::FromVector({1, 1, 1}, {3});
  EXPECT_NE(Fp8Gemm(a, two_scales, b, one, {}, 0.0f, &c, CpuStream()).message().find("a_scale_inv"),
            absl::string_view::npos);
  EXPECT_EQ(Fp8Gemm(a, one, b, one, {}, 0.5f, &c, CpuStream()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TransposePadTest, TransposesAndZeroPads) {
  const Tensor x = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor y = Tensor::Empty({3, 4}, DType::kF32);
  y.Fill(7.0f);
  TransposePad(x, &y, CpuStream());
  EXPECT_EQ(y.ToVector(), (std::vector<float>{1, 4, 0, 0, 2, 5, 0, 0, 3, 6, 0, 0}));
  const Tensor xb = x.To(DType::kBF16);
  Tensor yb = Tensor::Empty({3, 2}, DType::kBF16);
  TransposePad(xb, &yb, CpuStream());
  EXPECT_EQ(yb.ToVector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

// Every f32 bit pattern around the rounding boundaries of the FP8 normal ranges (and a stride
// through all others) cast by CastTransposeAmax equals core/dtype.h's conversion.
TEST(Fp8CastTest, FastPathEqualsTheGeneralCast) {
  std::vector<float> values;
  for (uint32_t exp = 100; exp <= 150; ++exp) {
    for (uint32_t high = 0; high < 8; ++high) {
      for (uint32_t low : {0u, 1u, 0x7ffffu, 0x80000u, 0x80001u, 0xfffffu, 0xbffffu, 0x40000u,
                           0x3ffffu, 0xc0000u, 0xc0001u, 0x1fffffu & 0xfffffu}) {
        for (uint32_t sign : {0u, 0x80000000u}) {
          const uint32_t bits = sign | (exp << 23) | (high << 20) | low;
          float v;
          std::memcpy(&v, &bits, 4);
          values.push_back(v);
        }
      }
      // E5M2 keeps 2 mantissa bits: its ties sit at bit 20.
      for (uint32_t low : {0x100000u, 0x0fffffu, 0x100001u, 0x200000u}) {
        const uint32_t bits = (exp << 23) | ((high & 3u) << 21) | low;
        float v;
        std::memcpy(&v, &bits, 4);
        values.push_back(v);
      }
    }
  }
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 9973) {
    float v;
    const uint32_t b = static_cast<uint32_t>(bits);
    std::memcpy(&v, &b, 4);
    values.push_back(v);
  }
  const int64_t n = static_cast<int64_t>(values.size());
  const Tensor x = Tensor::FromVector(values, {1, n});
  const Tensor one = Tensor::FromVector({1.0f}, {1});
  for (DType format : {DType::kFp8E4M3, DType::kFp8E5M2}) {
    Tensor y = Tensor::Empty({1, n}, format);
    CastTransposeAmax(x, one, &y, nullptr, nullptr, CpuStream());
    const uint8_t* got = static_cast<const uint8_t*>(y.raw_data());
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i) {
      float v = values[i];
      if (std::isnan(v)) v = std::numeric_limits<float>::quiet_NaN();  // the GPU's +NaN
      const uint8_t want = format == DType::kFp8E4M3 ? FloatToFp8E4M3(v) : FloatToFp8E5M2(v);
      if (got[i] != want && ++wrong < 5) {
        ADD_FAILURE() << DTypeName(format) << " " << values[i] << ": got " << int{got[i]}
                      << ", want " << int{want};
      }
    }
    EXPECT_EQ(wrong, 0) << DTypeName(format);
  }
}

}  // namespace
}  // namespace moefold::ops
