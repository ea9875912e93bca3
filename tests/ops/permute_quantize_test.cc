// CPU PermuteQuantize (ops/permute_quantize.h): equal, byte for byte, to PermuteTokens followed by
// the recipe's quantisation (CastTransposeAmax per tensor, QuantizeBlockwise in 1×128 tiles) —
// codes, per-row and per-tile scales and the accumulated amax — for f32 and bf16 rows, both
// formats, dropped pairs (a shorter `sorted`), zeros, NaN and ±Inf; and the bad tile width refused.
#include "ops/permute_quantize.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/fp8.h"
#include "ops/moe.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::RandomNormal;

std::vector<uint8_t> Bytes(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw_data());
  return std::vector<uint8_t>(p, p + t.nbytes());
}

// x (T, H) with values over several decades, zeros, and NaN/±Inf in token 1.
Tensor Rows(int64_t t, int64_t h, DType dtype) {
  std::vector<float> v = RandomNormal({t, h}, 11).ToVector();
  for (int64_t i = 0; i < t * h; ++i) {
    v[i] *= std::pow(10.0f, static_cast<float>(i % 7) - 3.0f);
    if (i % 17 == 0) v[i] = 0.0f;
  }
  v[h + 3] = std::numeric_limits<float>::quiet_NaN();
  v[h + 5] = std::numeric_limits<float>::infinity();
  v[h + 200 % h] = -std::numeric_limits<float>::infinity();
  return Tensor::FromVector(v, {t, h}).To(dtype);
}

// Pairs t·k + j of 5 tokens with k = 2 in a permuted order, dropping two of the ten pairs.
Tensor Sorted() { return Tensor::FromVectorI32({7, 0, 9, 4, 1, 5, 8, 3}, {8}); }

class PermuteQuantizeTest : public ::testing::TestWithParam<std::pair<DType, DType>> {};

TEST_P(PermuteQuantizeTest, PerTensorIsPermuteThenCast) {
  const auto [input, format] = GetParam();
  for (bool poison : {false, true}) {
    const Tensor x = poison ? Rows(5, 96, input)
                            : Tensor::FromVector(RandomNormal({5, 96}, 3).ToVector(), {5, 96})
                                  .To(input);
    const Tensor sorted = Sorted(), scale = Tensor::FromVector({37.5f}, {1});
    const Tensor scale_inv = Tensor::FromVector({1.0f / 37.5f}, {1});
    Tensor permuted = Tensor::Empty({8, 96}, input);
    PermuteTokens(x, sorted, 2, &permuted, CpuStream());
    Tensor want = Tensor::Empty({8, 96}, format), want_amax = Tensor::FromVector({0.5f}, {1});
    CastTransposeAmax(permuted, scale, &want, nullptr, &want_amax, CpuStream());

    Tensor codes = Tensor::Empty({8, 96}, format), rows = Tensor::Empty({8, 1}, DType::kF32);
    Tensor amax = Tensor::FromVector({0.5f}, {1});
    ASSERT_OK(PermuteQuantize(x, sorted, 2, scale, scale_inv, {}, &codes, &rows, &amax,
                              CpuStream()));
    EXPECT_EQ(Bytes(codes), Bytes(want));
    EXPECT_EQ(Bytes(amax), Bytes(want_amax));
    for (int64_t r = 0; r < 8; ++r) EXPECT_EQ(rows.data<float>()[r], 1.0f / 37.5f);
  }
}

TEST_P(PermuteQuantizeTest, TilesArePermuteThenQuantizeBlockwise) {
  const auto [input, format] = GetParam();
  for (bool pow2 : {false, true}) {
    const Tensor x = Rows(5, 256, input), sorted = Sorted();
    Tensor permuted = Tensor::Empty({8, 256}, input);
    PermuteTokens(x, sorted, 2, &permuted, CpuStream());
    Tensor want = Tensor::Empty({8, 256}, format), want_s = Tensor::Empty({8, 2}, DType::kF32);
    ASSERT_OK(QuantizeBlockwise(permuted, kFp8ActivationTile, {.pow2 = pow2}, &want, &want_s,
                                CpuStream()));
    Tensor codes = Tensor::Empty({8, 256}, format), s = Tensor::Empty({8, 2}, DType::kF32);
    ASSERT_OK(PermuteQuantize(x, sorted, 2, Tensor(), Tensor(), {.tiles = true, .pow2 = pow2},
                              &codes, &s, nullptr, CpuStream()));
    EXPECT_EQ(Bytes(codes), Bytes(want));
    EXPECT_EQ(Bytes(s), Bytes(want_s));
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, PermuteQuantizeTest,
                         ::testing::Values(std::pair{DType::kF32, DType::kFp8E4M3},
                                           std::pair{DType::kBF16, DType::kFp8E4M3},
                                           std::pair{DType::kF32, DType::kFp8E5M2}));

TEST(PermuteQuantizeErrorTest, RefusesAWidthThatTilesDoNotDivide) {
  const Tensor x = Tensor::Zeros({5, 96}, DType::kF32);
  Tensor codes = Tensor::Empty({8, 96}, DType::kFp8E4M3), s = Tensor::Empty({8, 1}, DType::kF32);
  const absl::Status status = PermuteQuantize(x, Sorted(), 2, Tensor(), Tensor(), {.tiles = true},
                                              &codes, &s, nullptr, CpuStream());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("H = 96"), std::string::npos) << status;
}

}  // namespace
}  // namespace moefold::ops
