// Tests of Gemm (vs a naive triple loop, every transpose and beta) and the Linear layer built on
// it.
#include "ops/gemm.h"

#include <cmath>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

// C = alpha·op(A)·op(B) + beta·C in f64, indexing the stored layout directly.
Tensor NaiveGemm(const Tensor& a, bool ta, const Tensor& b, bool tb, float alpha, float beta,
                 const Tensor& c) {
  const int64_t m = c.dim(0), n = c.dim(1), k = ta ? a.dim(0) : a.dim(1);
  Tensor out = c.Clone();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = ta ? pa[p * a.dim(1) + i] : pa[i * a.dim(1) + p];
        const double bv = tb ? pb[j * b.dim(1) + p] : pb[p * b.dim(1) + j];
        sum += av * bv;
      }
      float& o = out.data<float>()[i * n + j];
      o = static_cast<float>(alpha * sum + (beta == 0.0f ? 0.0 : beta * o));
    }
  }
  return out;
}

TEST(GemmTest, MatchesNaiveForEveryTransposeAndBeta) {
  const int64_t m = 3, k = 4, n = 5;
  uint64_t seed = 1;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (float beta : {0.0f, 1.0f}) {
        SCOPED_TRACE(::testing::Message() << "ta=" << ta << " tb=" << tb << " beta=" << beta);
        const Tensor a = RandomNormal(ta ? Shape{k, m} : Shape{m, k}, seed++);
        const Tensor b = RandomNormal(tb ? Shape{n, k} : Shape{k, n}, seed++);
        Tensor c = RandomNormal({m, n}, seed++);
        const Tensor expected = NaiveGemm(a, ta, b, tb, 0.5f, beta, c);
        Gemm(a, ta, b, tb, 0.5f, beta, &c, CpuStream());
        EXPECT_TENSOR_NEAR(c, expected, 1e-5, 1e-6);
      }
    }
  }
}

TEST(GemmTest, HandValue) {
  const Tensor a = Tensor::FromVector({1, 2, 3, 4}, {2, 2});
  const Tensor b = Tensor::FromVector({5, 6, 7, 8}, {2, 2});
  Tensor c = Tensor::FromVector({1, 1, 1, 1}, {2, 2});
  Gemm(a, false, b, false, 1.0f, 1.0f, &c, CpuStream());
  EXPECT_TENSOR_NEAR(c, Tensor::FromVector({20, 23, 44, 51}, {2, 2}), 0, 0);
}

TEST(GemmTest, BetaZeroIgnoresGarbageInC) {
  const Tensor a = RandomNormal({2, 3}, 10);
  const Tensor b = RandomNormal({3, 2}, 11);
  Tensor c = Tensor::Empty({2, 2}, DType::kF32);
  c.Fill(NAN);
  const Tensor zeros = Tensor::Zeros({2, 2}, DType::kF32);
  const Tensor expected = NaiveGemm(a, false, b, false, 1.0f, 0.0f, zeros);
  Gemm(a, false, b, false, 1.0f, 0.0f, &c, CpuStream());
  EXPECT_TENSOR_NEAR(c, expected, 1e-5, 1e-6);
}

TEST(GemmTest, EmptyInnerDimensionScalesC) {
  const Tensor a = Tensor::Zeros({2, 0}, DType::kF32);
  const Tensor b = Tensor::Zeros({0, 3}, DType::kF32);
  Tensor c = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3});
  Gemm(a, false, b, false, 1.0f, 2.0f, &c, CpuStream());
  EXPECT_TENSOR_NEAR(c, Tensor::FromVector({2, 4, 6, 8, 10, 12}, {2, 3}), 0, 0);
}

TEST(GemmDeathTest, ShapeMismatchNamesShapes) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor a = Tensor::Zeros({2, 3}, DType::kF32);
  const Tensor b = Tensor::Zeros({4, 2}, DType::kF32);
  Tensor c = Tensor::Zeros({2, 2}, DType::kF32);
  EXPECT_DEATH(Gemm(a, false, b, false, 1.0f, 0.0f, &c, CpuStream()), "does not fit c");
}

TEST(LinearTest, ForwardIsXTimesWTransposed) {
  const Tensor x = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor w = Tensor::FromVector({1, 0, 0, 0, 1, -1}, {2, 3});  // out = (x0, x1 - x2)
  Tensor y = Tensor::Zeros({2, 2}, DType::kF32);
  LinearForward(x, w, &y, CpuStream());
  EXPECT_TENSOR_NEAR(y, Tensor::FromVector({1, -1, 4, -1}, {2, 2}), 0, 0);
}

TEST(LinearTest, BiasIsAddedToEveryRow) {
  const Tensor x = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor w = Tensor::FromVector({1, 0, 0, 0, 1, -1}, {2, 3});
  const Tensor bias = Tensor::FromVector({10, -20}, {2});
  Tensor y = Tensor::Zeros({2, 2}, DType::kF32);
  LinearBiasForward(x, w, bias, &y, CpuStream());
  EXPECT_TENSOR_NEAR(y, Tensor::FromVector({11, -21, 14, -21}, {2, 2}), 0, 0);
}

TEST(LinearTest, BackwardMatchesFiniteDifferencesAndAccumulatesDw) {
  const int64_t t = 3, in = 4, out = 5;
  Tensor x = RandomNormal({t, in}, 21);
  Tensor w = RandomNormal({out, in}, 22);
  const Tensor cot = RandomNormal({t, out}, 23);
  Tensor y = Tensor::Zeros({t, out}, DType::kF32);
  auto loss = [&] {
    LinearForward(x, w, &y, CpuStream());
    return Dot(y, cot);
  };
  Tensor d_x = RandomNormal({t, in}, 24);  // overwritten
  const Tensor d_w_before = RandomNormal({out, in}, 25);
  Tensor d_w = d_w_before.Clone();  // accumulated
  LinearBackward(x, w, cot, &d_x, &d_w, CpuStream());
  EXPECT_TRUE(GradientMatches(d_x, loss, &x));
  EXPECT_TRUE(GradientMatches(Delta(d_w, d_w_before), loss, &w));
}

}  // namespace
}  // namespace moefold::ops
