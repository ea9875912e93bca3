// Tests of Add (incl. aliasing) and Scale against hand values.
#include "ops/elementwise.h"

#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

TEST(ElementwiseTest, AddHandValueAndAliasing) {
  Tensor a = Tensor::FromVector({1, 2, 3}, {3});
  const Tensor b = Tensor::FromVector({10, 20, 30}, {3});
  Tensor out = Tensor::Zeros({3}, DType::kF32);
  Add(a, b, &out, CpuStream());
  EXPECT_TENSOR_NEAR(out, Tensor::FromVector({11, 22, 33}, {3}), 0, 0);
  Add(a, b, &a, CpuStream());  // residual add in place
  EXPECT_TENSOR_NEAR(a, Tensor::FromVector({11, 22, 33}, {3}), 0, 0);
}

TEST(ElementwiseTest, ScaleHandValues) {
  Tensor x = Tensor::FromVector({1.5f, 0, 2.5f, 3}, {2, 2});
  Scale(-2.0f, &x, CpuStream());
  EXPECT_TENSOR_NEAR(x, Tensor::FromVector({-3, 0, -5, -6}, {2, 2}), 0, 0);
}

TEST(ElementwiseDeathTest, AddShapeMismatch) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor a = Tensor::Zeros({3}, DType::kF32);
  const Tensor b = Tensor::Zeros({4}, DType::kF32);
  Tensor out = Tensor::Zeros({3}, DType::kF32);
  EXPECT_DEATH(Add(a, b, &out, CpuStream()), "Add: b must have shape");
}

}  // namespace
}  // namespace moefold::ops
