// Tests of SumOfSquares, SumOfSquaresInto and Amax (f32 and bf16 inputs, NaN propagation).
#include "ops/reduce.h"

#include <cmath>
#include <vector>

#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

TEST(ReduceTest, SumOfSquaresHandValue) {
  EXPECT_DOUBLE_EQ(SumOfSquares(Tensor::FromVector({1, -2, 3}, {3}), CpuStream()), 14.0);
}

TEST(ReduceTest, SumOfSquaresAccumulatesInDouble) {
  // 2^24 + 1 ones: an f32 accumulator would stop at 2^24.
  const int64_t n = (1 << 24) + 1;
  Tensor x = Tensor::Empty({n}, DType::kF32);
  x.Fill(1.0f);
  EXPECT_DOUBLE_EQ(SumOfSquares(x, CpuStream()), static_cast<double>(n));
}

TEST(ReduceTest, SumOfSquaresIntoAccumulatesAnF64) {
  Tensor acc = Tensor::Zeros({1}, DType::kI64);  // one f64
  *static_cast<double*>(acc.raw_data()) = 0.5;
  SumOfSquaresInto(Tensor::FromVector({1, -2, 3}, {3}), &acc, CpuStream());
  SumOfSquaresInto(Tensor::FromVector({0.5f, 2}, {2}).To(DType::kBF16), &acc, CpuStream());
  EXPECT_DOUBLE_EQ(*static_cast<const double*>(acc.raw_data()), 0.5 + 14.0 + 4.25);
}

TEST(ReduceTest, AmaxOfF32AndBf16) {
  const Tensor x = Tensor::FromVector({0.5f, -3.0f, 2.0f}, {3});
  EXPECT_EQ(Amax(x, CpuStream()), 3.0f);
  std::vector<float> values(5000, 1.0f);  // more than one conversion chunk
  values[4500] = -7.5f;
  EXPECT_EQ(Amax(Tensor::FromVector(values, {5000}).To(DType::kBF16), CpuStream()), 7.5f);
}

TEST(ReduceTest, AmaxPropagatesNan) {
  const Tensor x = Tensor::FromVector({1.0f, NAN, 2.0f}, {3});
  EXPECT_TRUE(std::isnan(Amax(x, CpuStream())));
}

}  // namespace
}  // namespace moefold::ops
