// GPU parity of PermuteQuantize (skips without a GPU): the fused kernel gives the CPU reference's
// bits — codes byte for byte, per-row and per-tile scales and the amax — for f32 and bf16 rows,
// both formats, per tensor and in tiles (pow2 too), with zeros, NaN, ±Inf and saturating values,
// on shapes where every block loops over several rows; and GatherRows moves FP8 rows (aligned
// and unaligned widths) as the CPU does.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/permute_quantize.h"
#include "ops/rows.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::RandomNormal;

std::vector<uint8_t> Bytes(const Tensor& t) {
  const Tensor host = t.To(Device::Cpu());
  const auto* p = static_cast<const uint8_t*>(host.raw_data());
  return std::vector<uint8_t>(p, p + host.nbytes());
}

Tensor GpuGarbage(const Shape& shape, DType dtype) {
  Tensor host = Tensor::Empty(shape, dtype);
  std::memset(host.raw_data(), 0xA5, host.nbytes());
  return host.To(Gpu());
}

Tensor Data(int64_t t, int64_t h) {
  std::vector<float> v = RandomNormal({t, h}, 5).ToVector();
  for (int64_t i = 0; i < t * h; ++i) {
    v[i] *= std::pow(10.0f, static_cast<float>((i / 37) % 9) - 4.0f);
    if (i % 19 == 0) v[i] = 0.0f;
  }
  v[h + 1] = std::numeric_limits<float>::quiet_NaN();
  v[2 * h + 7] = std::numeric_limits<float>::infinity();
  v[3 * h] = -std::numeric_limits<float>::infinity();
  return Tensor::FromVector(v, {t, h});
}

// A permutation of T·k pairs with every third one dropped.
Tensor Sorted(int64_t pairs) {
  std::vector<int32_t> s;
  for (int64_t i = 0; i < pairs; ++i) {
    const int64_t p = (i * 7919) % pairs;
    if (i % 3 != 2) s.push_back(static_cast<int32_t>(p));
  }
  return Tensor::FromVectorI32(s, {static_cast<int64_t>(s.size())});
}

class CudaPermuteQuantizeTest : public ::testing::TestWithParam<std::pair<DType, DType>> {};

TEST_P(CudaPermuteQuantizeTest, PerTensorMatchesTheCpu) {
  MF_REQUIRE_GPU();
  const auto [input, format] = GetParam();
  const int64_t t = 3001, h = 384, k = 2;
  const Tensor x = Data(t, h).To(input), sorted = Sorted(t * k);
  const int64_t n = sorted.numel();
  const Tensor scale = Tensor::FromVector({21.0f}, {1});
  const Tensor scale_inv = Tensor::FromVector({1.0f / 21.0f}, {1});
  Tensor codes = Tensor::Empty({n, h}, format), rows = Tensor::Empty({n, 1}, DType::kF32);
  Tensor amax = Tensor::FromVector({0.125f}, {1});
  ASSERT_OK(PermuteQuantize(x, sorted, k, scale, scale_inv, {}, &codes, &rows, &amax,
                            CpuStream()));
  Tensor codes_gpu = GpuGarbage({n, h}, format), rows_gpu = GpuGarbage({n, 1}, DType::kF32);
  Tensor amax_gpu = Tensor::FromVector({0.125f}, {1}).To(Gpu());
  ASSERT_OK(PermuteQuantize(x.To(Gpu()), sorted.To(Gpu()), k, scale.To(Gpu()),
                            scale_inv.To(Gpu()), {}, &codes_gpu, &rows_gpu, &amax_gpu,
                            GpuStream()));
  EXPECT_EQ(Bytes(codes_gpu), Bytes(codes));
  EXPECT_EQ(Bytes(rows_gpu), Bytes(rows));
  EXPECT_EQ(Bytes(amax_gpu), Bytes(amax));
}

TEST_P(CudaPermuteQuantizeTest, TilesMatchTheCpu) {
  MF_REQUIRE_GPU();
  const auto [input, format] = GetParam();
  const int64_t t = 2003, h = 512, k = 3;
  for (bool pow2 : {false, true}) {
    const Tensor x = Data(t, h).To(input), sorted = Sorted(t * k);
    const int64_t n = sorted.numel();
    Tensor codes = Tensor::Empty({n, h}, format), s = Tensor::Empty({n, h / 128}, DType::kF32);
    ASSERT_OK(PermuteQuantize(x, sorted, k, Tensor(), Tensor(), {.tiles = true, .pow2 = pow2},
                              &codes, &s, nullptr, CpuStream()));
    Tensor codes_gpu = GpuGarbage({n, h}, format), s_gpu = GpuGarbage({n, h / 128}, DType::kF32);
    ASSERT_OK(PermuteQuantize(x.To(Gpu()), sorted.To(Gpu()), k, Tensor(), Tensor(),
                              {.tiles = true, .pow2 = pow2}, &codes_gpu, &s_gpu, nullptr,
                              GpuStream()));
    EXPECT_EQ(Bytes(codes_gpu), Bytes(codes)) << (pow2 ? "pow2" : "");
    EXPECT_EQ(Bytes(s_gpu), Bytes(s)) << (pow2 ? "pow2" : "");
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaPermuteQuantizeTest,
                         ::testing::Values(std::pair{DType::kF32, DType::kFp8E4M3},
                                           std::pair{DType::kBF16, DType::kFp8E4M3},
                                           std::pair{DType::kBF16, DType::kFp8E5M2}));

TEST(CudaGatherFp8RowsTest, MatchesTheCpu) {
  MF_REQUIRE_GPU();
  for (int64_t h : {128, 130, 7}) {
    Tensor x = Tensor::Empty({50, h}, DType::kFp8E4M3);
    auto* p = static_cast<uint8_t*>(x.raw_data());
    for (int64_t i = 0; i < 50 * h; ++i) p[i] = static_cast<uint8_t>(i * 31 + 7);
    std::vector<int32_t> idx;
    for (int i = 0; i < 80; ++i) idx.push_back(i % 5 == 0 ? -1 : (i * 13) % 50);
    const Tensor index = Tensor::FromVectorI32(idx, {80});
    Tensor out = Tensor::Empty({80, h}, DType::kFp8E4M3);
    GatherRows(x, index, &out, CpuStream());
    Tensor out_gpu = GpuGarbage({80, h}, DType::kFp8E4M3);
    GatherRows(x.To(Gpu()), index.To(Gpu()), &out_gpu, GpuStream());
    EXPECT_EQ(Bytes(out_gpu), Bytes(out)) << "H = " << h;
  }
}

}  // namespace
}  // namespace moefold::ops
