// Tests of SwiGLU: hand values and finite-difference checks of d_gate and d_up.
#include "ops/activation.h"

#include <cmath>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

TEST(SwiGluTest, HandValues) {
  // silu(0) = 0, silu(1) = 1/(1+e⁻¹), silu(-1) = -1/(1+e), silu(-100) ≈ 0 (no overflow).
  const Tensor gate = Tensor::FromVector({0, 1, -1, -100}, {1, 4});
  const Tensor up = Tensor::FromVector({5, 2, 3, 7}, {1, 4});
  Tensor out = Tensor::Zeros({1, 4}, DType::kF32);
  SwiGluForward(gate, up, &out, CpuStream());
  const float s1 = 1.0f / (1.0f + std::exp(-1.0f));
  const float sm1 = -1.0f / (1.0f + std::exp(1.0f));
  EXPECT_TENSOR_NEAR(out, Tensor::FromVector({0, 2 * s1, 3 * sm1, 0}, {1, 4}), 1e-6, 1e-30);
}

TEST(SwiGluTest, BackwardMatchesFiniteDifferences) {
  Tensor gate = RandomNormal({3, 5}, 1, 2.0f);
  Tensor up = RandomNormal({3, 5}, 2);
  const Tensor cot = RandomNormal({3, 5}, 3);
  Tensor out = Tensor::Zeros({3, 5}, DType::kF32);
  auto loss = [&] {
    SwiGluForward(gate, up, &out, CpuStream());
    return Dot(out, cot);
  };
  Tensor d_gate = RandomNormal({3, 5}, 4), d_up = RandomNormal({3, 5}, 5);  // overwritten
  SwiGluBackward(gate, up, cot, &d_gate, &d_up, CpuStream());
  EXPECT_TRUE(GradientMatches(d_gate, loss, &gate));
  EXPECT_TRUE(GradientMatches(d_up, loss, &up));
}

}  // namespace
}  // namespace moefold::ops
