// Tests of SwiGLU: hand values and finite-difference checks of d_gate and d_up, for separate gate
// and up tensors and for the fused (T, 2F) gate_up tensor.
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

// gate_up (rows, 2F) with gate's columns first, from separate (rows, F) tensors.
Tensor Fuse(const Tensor& gate, const Tensor& up) {
  const int64_t rows = gate.dim(0), f = gate.dim(1);
  Tensor gate_up = Tensor::Zeros({rows, 2 * f}, DType::kF32);
  for (int64_t t = 0; t < rows; ++t) {
    for (int64_t i = 0; i < f; ++i) {
      gate_up.data<float>()[t * 2 * f + i] = gate.data<float>()[t * f + i];
      gate_up.data<float>()[t * 2 * f + f + i] = up.data<float>()[t * f + i];
    }
  }
  return gate_up;
}

TEST(SwiGluFusedTest, HandValues) {
  // Row 0: gate (0, 1), up (5, 2); row 1: gate (-1, -100), up (3, 7).
  const Tensor gate_up = Tensor::FromVector({0, 1, 5, 2, -1, -100, 3, 7}, {2, 4});
  Tensor out = Tensor::Zeros({2, 2}, DType::kF32);
  SwiGluForward(gate_up, &out, CpuStream());
  const float s1 = 1.0f / (1.0f + std::exp(-1.0f));
  const float sm1 = -1.0f / (1.0f + std::exp(1.0f));
  EXPECT_TENSOR_NEAR(out, Tensor::FromVector({0, 2 * s1, 3 * sm1, 0}, {2, 2}), 1e-6, 1e-30);
}

TEST(SwiGluFusedTest, MatchesTheTwoTensorFormExactly) {
  const Tensor gate = RandomNormal({4, 6}, 1, 2.0f), up = RandomNormal({4, 6}, 2);
  const Tensor d_out = RandomNormal({4, 6}, 3);
  const Tensor gate_up = Fuse(gate, up);
  Tensor out = Tensor::Zeros({4, 6}, DType::kF32), fused_out = Tensor::Zeros({4, 6}, DType::kF32);
  SwiGluForward(gate, up, &out, CpuStream());
  SwiGluForward(gate_up, &fused_out, CpuStream());
  EXPECT_TENSOR_NEAR(fused_out, out, 0, 0);
  Tensor d_gate = Tensor::Zeros({4, 6}, DType::kF32), d_up = Tensor::Zeros({4, 6}, DType::kF32);
  SwiGluBackward(gate, up, d_out, &d_gate, &d_up, CpuStream());
  Tensor d_gate_up = RandomNormal({4, 12}, 4);  // overwritten
  SwiGluBackward(gate_up, d_out, &d_gate_up, CpuStream());
  EXPECT_TENSOR_NEAR(d_gate_up, Fuse(d_gate, d_up), 0, 0);
  // In place over gate_up.
  Tensor in_place = gate_up.Clone();
  SwiGluBackward(in_place, d_out, &in_place, CpuStream());
  EXPECT_TENSOR_NEAR(in_place, d_gate_up, 0, 0);
}

TEST(SwiGluFusedTest, BackwardMatchesFiniteDifferences) {
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

TEST(SwiGluFusedTest, Bf16RoundsEachOutputOnce) {
  const Tensor gate_up = RandomNormal({2, 8}, 8, 2.0f).To(DType::kBF16);
  Tensor out = Tensor::Zeros({2, 4}, DType::kBF16);
  SwiGluForward(gate_up, &out, CpuStream());
  Tensor expected = Tensor::Zeros({2, 4}, DType::kF32);
  SwiGluForward(gate_up.To(DType::kF32), &expected, CpuStream());
  EXPECT_TENSOR_NEAR(out.To(DType::kF32), expected.To(DType::kBF16).To(DType::kF32), 0, 0);
}

TEST(SwiGluFusedDeathTest, OddColumnCount) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor gate_up = Tensor::Zeros({2, 5}, DType::kF32);
  Tensor out = Tensor::Zeros({2, 2}, DType::kF32);
  EXPECT_DEATH(SwiGluForward(gate_up, &out, CpuStream()), "even number of columns");
}

}  // namespace
}  // namespace moefold::ops
