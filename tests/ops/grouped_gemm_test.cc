// Tests of the grouped expert linear: forward, d_x and the accumulated d_w against a naive f64
// loop over each row's expert for equal, unequal and zero counts (bf16 emulated too), finite-
// difference checks, and the backend names.
#include "ops/grouped_gemm.h"

#include <vector>

#include "ops/gemm.h"
#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

constexpr int64_t kIn = 3, kOut = 2;

// The expert of every row for `counts` (rows grouped by expert, in expert order).
std::vector<int64_t> ExpertOfRow(const std::vector<int32_t>& counts) {
  std::vector<int64_t> expert;
  for (size_t e = 0; e < counts.size(); ++e) expert.insert(expert.end(), counts[e], e);
  return expert;
}

// y = x·W[e]ᵀ, d_x = d_y·W[e], d_w[e] += d_yᵀ·x row by row in f64: the specification.
struct Naive {
  Tensor y, d_x, d_w;
};
Naive NaiveGrouped(const Tensor& x, const Tensor& w, const std::vector<int32_t>& counts,
                   const Tensor& d_y, const Tensor& d_w0) {
  const int64_t rows = x.dim(0), out = w.dim(1), in = w.dim(2);
  const std::vector<int64_t> expert = ExpertOfRow(counts);
  std::vector<double> y(rows * out, 0.0), d_x(rows * in, 0.0), d_w(w.numel(), 0.0);
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pd = d_y.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* we = pw + expert[r] * out * in;
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t i = 0; i < in; ++i) {
        y[r * out + o] += double(px[r * in + i]) * we[o * in + i];
        d_x[r * in + i] += double(pd[r * out + o]) * we[o * in + i];
        d_w[expert[r] * out * in + o * in + i] += double(pd[r * out + o]) * px[r * in + i];
      }
    }
  }
  Naive n{Tensor::Zeros({rows, out}, DType::kF32), Tensor::Zeros({rows, in}, DType::kF32),
          d_w0.Clone()};
  for (int64_t i = 0; i < n.y.numel(); ++i) n.y.data<float>()[i] = static_cast<float>(y[i]);
  for (int64_t i = 0; i < n.d_x.numel(); ++i) n.d_x.data<float>()[i] = static_cast<float>(d_x[i]);
  for (int64_t i = 0; i < n.d_w.numel(); ++i) n.d_w.data<float>()[i] += static_cast<float>(d_w[i]);
  return n;
}

struct CountsCase {
  const char* name;
  std::vector<int32_t> counts;
};

class GroupedLinearCountsTest : public ::testing::TestWithParam<CountsCase> {};

TEST_P(GroupedLinearCountsTest, ForwardDxAndAccumulatedDwMatchTheNaiveLoop) {
  const std::vector<int32_t>& counts = GetParam().counts;
  const int64_t experts = static_cast<int64_t>(counts.size());
  int64_t rows = 0;
  for (int32_t c : counts) rows += c;
  const int64_t in = 5, out = 4;
  const Tensor count_tensor = Tensor::FromVectorI32(counts, {experts});
  const Tensor x = RandomNormal({rows, in}, 1), w = RandomNormal({experts, out, in}, 2);
  const Tensor d_y = RandomNormal({rows, out}, 3), d_w0 = RandomNormal(w.shape(), 4);
  const Naive expected = NaiveGrouped(x, w, counts, d_y, d_w0);

  Tensor y = RandomNormal({rows, out}, 5);  // overwritten
  GroupedLinearForward(x, w, count_tensor, &y, CpuStream());
  EXPECT_TENSOR_NEAR(y, expected.y, 1e-5, 1e-5);
  Tensor d_x = RandomNormal(x.shape(), 6);  // overwritten
  Tensor d_w = d_w0.Clone();                // accumulated
  GroupedLinearBackward(x, w, count_tensor, d_y, &d_x, &d_w, CpuStream());
  EXPECT_TENSOR_NEAR(d_x, expected.d_x, 1e-5, 1e-5);
  EXPECT_TENSOR_NEAR(d_w, expected.d_w, 1e-5, 1e-5);
  // A second backward adds the same gradient again (accumulation, not assignment).
  GroupedLinearBackward(x, w, count_tensor, d_y, nullptr, &d_w, CpuStream());
  Tensor twice = expected.d_w.Clone();
  const Tensor once = Delta(expected.d_w, d_w0);
  for (int64_t i = 0; i < twice.numel(); ++i) twice.data<float>()[i] += once.data<float>()[i];
  EXPECT_TENSOR_NEAR(d_w, twice, 1e-5, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Counts, GroupedLinearCountsTest,
    ::testing::Values(CountsCase{"equal", {3, 3, 3, 3}}, CountsCase{"unequal", {2, 7, 1, 4}},
                      CountsCase{"zeros", {0, 6, 0, 2}}, CountsCase{"no_rows", {0, 0, 0}}),
    [](const ::testing::TestParamInfo<CountsCase>& info) { return info.param.name; });

TEST(GroupedLinearTest, Bf16InputsWithAnF32GradientMatchTheRoundedLoop) {
  const std::vector<int32_t> counts = {4, 0, 3};
  const Tensor count_tensor = Tensor::FromVectorI32(counts, {3});
  const Tensor x = RandomNormal({7, 8}, 7).To(DType::kBF16);
  const Tensor w = RandomNormal({3, 6, 8}, 8).To(DType::kBF16);
  const Tensor d_y = RandomNormal({7, 6}, 9).To(DType::kBF16);
  const Tensor d_w0 = RandomNormal({3, 6, 8}, 10);
  const Naive expected =
      NaiveGrouped(x.To(DType::kF32), w.To(DType::kF32), counts, d_y.To(DType::kF32), d_w0);
  Tensor y = Tensor::Zeros({7, 6}, DType::kBF16);
  GroupedLinearForward(x, w, count_tensor, &y, CpuStream());
  EXPECT_TENSOR_NEAR(y.To(DType::kF32), expected.y, 1e-2, 1e-2);
  Tensor d_x = Tensor::Zeros({7, 8}, DType::kBF16), d_w = d_w0.Clone();
  GroupedLinearBackward(x, w, count_tensor, d_y, &d_x, &d_w, CpuStream());
  EXPECT_TENSOR_NEAR(d_x.To(DType::kF32), expected.d_x, 1e-2, 1e-2);
  // f32 accumulation of exact products of bf16 values: only f32 rounding separates the two.
  EXPECT_TENSOR_NEAR(d_w, expected.d_w, 1e-5, 1e-5);
}

TEST(GroupedLinearTest, BackwardMatchesFiniteDifferencesAndAccumulatesDw) {
  const Tensor counts = Tensor::FromVectorI32({1, 3, 0}, {3});
  Tensor x = RandomNormal({4, kIn}, 3);
  Tensor w = RandomNormal({3, kOut, kIn}, 4);
  const Tensor cot = RandomNormal({4, kOut}, 5);
  Tensor y = Tensor::Zeros({4, kOut}, DType::kF32);
  auto loss = [&] {
    GroupedLinearForward(x, w, counts, &y, CpuStream());
    return Dot(y, cot);
  };
  Tensor d_x = RandomNormal(x.shape(), 6);  // overwritten
  const Tensor before = RandomNormal(w.shape(), 7);
  Tensor d_w = before.Clone();  // accumulated; expert 2 (no rows) keeps its old value
  GroupedLinearBackward(x, w, counts, cot, &d_x, &d_w, CpuStream());
  EXPECT_TRUE(GradientMatches(d_x, loss, &x));
  EXPECT_TRUE(GradientMatches(Delta(d_w, before), loss, &w));
}

TEST(GroupedGemmBackendTest, NamesRoundTripAndTheDefaultIsAuto) {
  EXPECT_EQ(GetGroupedGemmBackend(), GroupedGemmBackend::kAuto);
  for (GroupedGemmBackend b : {GroupedGemmBackend::kAuto, GroupedGemmBackend::kLoop,
                               GroupedGemmBackend::kCublasGrouped, GroupedGemmBackend::kBatched}) {
    const absl::StatusOr<GroupedGemmBackend> parsed =
        ParseGroupedGemmBackend(GroupedGemmBackendName(b));
    ASSERT_OK(parsed);
    EXPECT_EQ(*parsed, b);
  }
  const absl::StatusOr<GroupedGemmBackend> bad = ParseGroupedGemmBackend("grouped");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("cublas_grouped"), std::string::npos);
}

}  // namespace
}  // namespace moefold::ops
