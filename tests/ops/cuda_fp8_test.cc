// GPU parity of the FP8 ops (skips without a GPU): CastTransposeAmax, QuantizeBlockwise,
// DequantizeBlockwise and Fp8UpdateScales give the CPU reference's bits — codes byte for byte,
// scales and amaxes element for element (NaN for NaN) — for f32 and bf16 inputs, both formats,
// ragged shapes (partial transpose tiles), shapes where each thread block loops, and inputs with
// zeros, ±NaN, ±Inf, subnormals and values beyond the format's range.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/fp8.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::RandomNormal;

// Normal values spread over 10^-6 … 10^4 (subnormal and saturating codes), exact zeros, and with
// `poison` a NaN and ±Inf.
Tensor Data(int64_t m, int64_t n, uint64_t seed, bool poison) {
  std::vector<float> v = RandomNormal({m, n}, seed).ToVector();
  for (int64_t i = 0; i < m * n; ++i) {
    v[i] *= std::pow(10.0f, static_cast<float>((i / 61) % 11) - 6.0f);
    if (i % 13 == 0) v[i] = 0.0f;
  }
  if (poison) {
    v[(m * n) / 3] = std::numeric_limits<float>::quiet_NaN();
    v[(m * n) / 2] = std::numeric_limits<float>::infinity();
    v[m * n - 1] = -std::numeric_limits<float>::infinity();
    v[(m * n) / 4] = -std::numeric_limits<float>::quiet_NaN();
  }
  return Tensor::FromVector(v, {m, n});
}

std::vector<uint8_t> Bytes(const Tensor& t) {
  const Tensor host = t.To(Device::Cpu());
  const uint8_t* p = static_cast<const uint8_t*>(host.raw_data());
  return std::vector<uint8_t>(p, p + host.nbytes());
}

// Equal bits, or both NaN.
::testing::AssertionResult SameFloats(const Tensor& actual, const Tensor& expected) {
  const std::vector<float> a = actual.ToVector(), e = expected.ToVector();
  if (a.size() != e.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(e[i])) continue;
    if (std::memcmp(&a[i], &e[i], 4) != 0) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << e[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// A GPU tensor of `dtype` holding 0xA5 bytes: an element the op fails to write fails the check.
Tensor GpuGarbage(const Shape& shape, DType dtype) {
  Tensor host = Tensor::Empty(shape, dtype);
  std::memset(host.raw_data(), 0xA5, host.nbytes());
  return host.To(Gpu());
}

struct Case {
  DType input;
  DType format;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrCat(DTypeName(info.param.input), "_", DTypeName(info.param.format));
}

class CudaFp8Test : public ::testing::TestWithParam<Case> {};

TEST_P(CudaFp8Test, CastTransposeAmaxMatchesTheCpu) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  for (const auto& [m, n] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {5, 7}, {32, 32}, {33, 65}, {128, 300}, {1000, 1500}}) {
    for (bool poison : {false, true}) {
      for (float s : {1.0f, 37.5f}) {
        const std::string what = absl::StrCat(m, "×", n, " scale ", s, poison ? " poisoned" : "");
        const Tensor x = Data(m, n, 7, poison).To(c.input);
        const Tensor scale = Tensor::FromVector({s}, {1});
        Tensor y = Tensor::Empty({m, n}, c.format), y_t = Tensor::Empty({n, m}, c.format);
        Tensor amax = Tensor::FromVector({0.25f}, {1});
        Tensor y_gpu = GpuGarbage({m, n}, c.format), y_t_gpu = GpuGarbage({n, m}, c.format);
        Tensor amax_gpu = amax.To(Gpu());
        CastTransposeAmax(x, scale, &y, &y_t, &amax, CpuStream());
        CastTransposeAmax(x.To(Gpu()), scale.To(Gpu()), &y_gpu, &y_t_gpu, &amax_gpu, GpuStream());
        EXPECT_EQ(Bytes(y_gpu), Bytes(y)) << what;
        EXPECT_EQ(Bytes(y_t_gpu), Bytes(y_t)) << what;
        EXPECT_EQ(Bytes(amax_gpu), Bytes(amax)) << what;  // the quiet NaN's bits too
      }
    }
  }
}

TEST_P(CudaFp8Test, CastWithoutOutputsOnlyAccumulatesTheAmax) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  const Tensor x = Data(70, 90, 8, false).To(c.input);
  const Tensor scale = Tensor::FromVector({2.0f}, {1});
  Tensor amax = Tensor::FromVector({0.0f}, {1});
  Tensor amax_gpu = amax.To(Gpu());
  CastTransposeAmax(x, scale, nullptr, nullptr, &amax, CpuStream());
  CastTransposeAmax(x.To(Gpu()), scale.To(Gpu()), nullptr, nullptr, &amax_gpu, GpuStream());
  EXPECT_EQ(Bytes(amax_gpu), Bytes(amax));
  Tensor y_t = Tensor::Empty({90, 70}, c.format), y_t_gpu = GpuGarbage({90, 70}, c.format);
  CastTransposeAmax(x, scale, nullptr, &y_t, nullptr, CpuStream());
  CastTransposeAmax(x.To(Gpu()), scale.To(Gpu()), nullptr, &y_t_gpu, nullptr, GpuStream());
  EXPECT_EQ(Bytes(y_t_gpu), Bytes(y_t));
}

TEST_P(CudaFp8Test, BlockwiseMatchesTheCpu) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  for (const Fp8BlockShape& block : {kFp8ActivationTile, kFp8WeightBlock, Fp8BlockShape{4, 32}}) {
    for (bool pow2 : {false, true}) {
      for (bool poison : {false, true}) {
        const int64_t m = 256, n = 640, bm = m / block.rows, bn = n / block.cols;
        const std::string what = absl::StrCat(block.rows, "×", block.cols, pow2 ? " pow2" : "",
                                              poison ? " poisoned" : "");
        const Tensor x = Data(m, n, 9, poison).To(c.input);
        Tensor q = Tensor::Empty({m, n}, c.format), s = Tensor::Empty({bm, bn}, DType::kF32);
        Tensor q_gpu = GpuGarbage({m, n}, c.format), s_gpu = GpuGarbage({bm, bn}, DType::kF32);
        ASSERT_OK(QuantizeBlockwise(x, block, {.pow2 = pow2}, &q, &s, CpuStream()));
        ASSERT_OK(
            QuantizeBlockwise(x.To(Gpu()), block, {.pow2 = pow2}, &q_gpu, &s_gpu, GpuStream()));
        EXPECT_EQ(Bytes(q_gpu), Bytes(q)) << what;
        EXPECT_EQ(Bytes(s_gpu), Bytes(s)) << what;
        Tensor back = Tensor::Empty({m, n}, c.input);
        Tensor back_gpu = GpuGarbage({m, n}, c.input);
        ASSERT_OK(DequantizeBlockwise(q, s, block, &back, CpuStream()));
        ASSERT_OK(DequantizeBlockwise(q_gpu, s_gpu, block, &back_gpu, GpuStream()));
        EXPECT_TRUE(SameFloats(back_gpu, back)) << what;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaFp8Test,
                         ::testing::Values(Case{DType::kF32, DType::kFp8E4M3},
                                           Case{DType::kF32, DType::kFp8E5M2},
                                           Case{DType::kBF16, DType::kFp8E4M3},
                                           Case{DType::kBF16, DType::kFp8E5M2}),
                         CaseName);

TEST(CudaFp8UpdateTest, RefusesADimensionOnTheGpuToo) {
  MF_REQUIRE_GPU();
  Tensor q = GpuGarbage({4, 200}, DType::kFp8E4M3), s = GpuGarbage({4, 1}, DType::kF32);
  const absl::Status status = QuantizeBlockwise(Tensor::Zeros({4, 200}, DType::kF32, Gpu()),
                                                kFp8ActivationTile, {}, &q, &s, GpuStream());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

TEST(CudaFp8UpdateTest, UpdateScalesMatchesTheCpuStepByStep) {
  MF_REQUIRE_GPU();
  const int64_t t = 300, length = 4;
  Tensor history = Tensor::Zeros({length, t}, DType::kF32);
  Tensor scale = Tensor::Empty({t}, DType::kF32), scale_inv = Tensor::Empty({t}, DType::kF32);
  scale.Fill(1.0f);
  Tensor history_gpu = history.To(Gpu()), scale_gpu = scale.To(Gpu());
  Tensor scale_inv_gpu = GpuGarbage({t}, DType::kF32);
  for (int step = 0; step < 7; ++step) {
    std::vector<float> a = RandomNormal({t}, 100 + step, 50.0f).ToVector();
    for (int64_t k = 0; k < t; ++k) {
      a[k] = std::fabs(a[k]);
      if ((k + step) % 17 == 0) a[k] = 0.0f;
      if ((k + step) % 23 == 0) a[k] = std::numeric_limits<float>::quiet_NaN();
      if ((k + step) % 29 == 0) a[k] = std::numeric_limits<float>::infinity();
      if ((k + step) % 31 == 0) a[k] = 1e-44f;  // a subnormal: the scale overflows to FLT_MAX
    }
    Tensor amax = Tensor::FromVector(a, {t}), amax_gpu = amax.To(Gpu());
    Fp8UpdateScales(448.0f, &amax, &history, &scale, &scale_inv, CpuStream());
    Fp8UpdateScales(448.0f, &amax_gpu, &history_gpu, &scale_gpu, &scale_inv_gpu, GpuStream());
    EXPECT_TRUE(SameFloats(amax_gpu, amax)) << "step " << step;
    EXPECT_TRUE(SameFloats(history_gpu, history)) << "step " << step;
    EXPECT_EQ(Bytes(scale_gpu), Bytes(scale)) << "step " << step;
    EXPECT_EQ(Bytes(scale_inv_gpu), Bytes(scale_inv)) << "step " << step;
  }
  Tensor amax = Tensor::FromVector(std::vector<float>(t, 3.0f), {t}), amax_gpu = amax.To(Gpu());
  Fp8UpdateScales(57344.0f, &amax, nullptr, &scale, &scale_inv, CpuStream());
  Fp8UpdateScales(57344.0f, &amax_gpu, nullptr, &scale_gpu, &scale_inv_gpu, GpuStream());
  EXPECT_EQ(Bytes(scale_gpu), Bytes(scale));
  EXPECT_EQ(Bytes(scale_inv_gpu), Bytes(scale_inv));
}

}  // namespace
}  // namespace moefold::ops
