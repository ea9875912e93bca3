// Tests of SwiGLU on the fused (T, 2F) gate_up tensor: hand values, finite-difference checks of
// d_gate and d_up, the in-place backward, bf16 rounding and the shape check.
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
  // Row 0: gate (0, 1), up (5, 2); row 1: gate (-1, -100), up (3, 7).
  const Tensor gate_up = Tensor::FromVector({0, 1, 5, 2, -1, -100, 3, 7}, {2, 4});
  Tensor out = Tensor::Zeros({2, 2}, DType::kF32);
  SwiGluForward(gate_up, &out, CpuStream());
  const float s1 = 1.0f / (1.0f + std::exp(-1.0f));
  const float sm1 = -1.0f / (1.0f + std::exp(1.0f));
  EXPECT_TENSOR_NEAR(out, Tensor::FromVector({0, 2 * s1, 3 * sm1, 0}, {2, 2}), 1e-6, 1e-30);
}

TEST(SwiGluTest, BackwardHandValues) {
  // gate 1, up 2, d_out 3: d_up = 3·silu(1) = 3·σ(1); d_gate = 3·2·σ(1)·(1 + (1 − σ(1))).
  const Tensor gate_up = Tensor::FromVector({1, 2}, {1, 2});
  Tensor d_gate_up = Tensor::Zeros({1, 2}, DType::kF32);
  SwiGluBackward(gate_up, Tensor::FromVector({3}, {1, 1}), &d_gate_up, CpuStream());
  const float s = 1.0f / (1.0f + std::exp(-1.0f));
  EXPECT_TENSOR_NEAR(d_gate_up, Tensor::FromVector({6 * s * (2 - s), 3 * s}, {1, 2}), 1e-6, 1e-30);
}

TEST(SwiGluTest, InPlaceBackwardEqualsOutOfPlace) {
  const Tensor gate_up = RandomNormal({4, 12}, 1, 2.0f);
  const Tensor d_out = RandomNormal({4, 6}, 3);
  Tensor d_gate_up = RandomNormal({4, 12}, 4);  // overwritten
  SwiGluBackward(gate_up, d_out, &d_gate_up, CpuStream());
  Tensor in_place = gate_up.Clone();
  SwiGluBackward(in_place, d_out, &in_place, CpuStream());
  EXPECT_TENSOR_NEAR(in_place, d_gate_up, 0, 0);
}

TEST(SwiGluTest, BackwardMatchesFiniteDifferences) {
  Tensor gate_up = RandomNormal({3, 10}, 5, 2.0f);
  const Tensor cot = RandomNormal({3, 5}, 6);
  Tensor out = Tensor::Zeros({3, 5}, DType::kF32);
  auto loss = [&] {
    SwiGluForward(gate_up, &out, CpuStream());
    return Dot(out, cot);
  };
  Tensor d_gate_up = RandomNormal({3, 10}, 7);  // overwritten
  SwiGluBackward(gate_up, cot, &d_gate_up, CpuStream());
  EXPECT_TRUE(GradientMatches(d_gate_up, loss, &gate_up));
}

TEST(SwiGluTest, Bf16RoundsEachOutputOnce) {
  const Tensor gate_up = RandomNormal({2, 8}, 8, 2.0f).To(DType::kBF16);
  Tensor out = Tensor::Zeros({2, 4}, DType::kBF16);
  SwiGluForward(gate_up, &out, CpuStream());
  Tensor expected = Tensor::Zeros({2, 4}, DType::kF32);
  SwiGluForward(gate_up.To(DType::kF32), &expected, CpuStream());
  EXPECT_TENSOR_NEAR(out.To(DType::kF32), expected.To(DType::kBF16).To(DType::kF32), 0, 0);
}

TEST(SwiGluDeathTest, OddColumnCount) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor gate_up = Tensor::Zeros({2, 5}, DType::kF32);
  Tensor out = Tensor::Zeros({2, 2}, DType::kF32);
  EXPECT_DEATH(SwiGluForward(gate_up, &out, CpuStream()), "even number of columns");
}

}  // namespace
}  // namespace moefold::ops
