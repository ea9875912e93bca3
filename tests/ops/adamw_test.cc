// Tests of AdamW against two steps computed by hand (PyTorch's formulas, f64), decoupled decay, and
// the 1-based step check.
#include "ops/adamw.h"

#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

TEST(AdamWTest, TwoStepsMatchHandComputedValues) {
  // lr 0.1, β = (0.9, 0.999), eps 1e-8, wd 0.1; grads 0.5 then −1 on p = 1.
  // Step 1: p = 0.99 − 0.1·0.5/(0.5 + 1e-8) = 0.89; m = 0.05; v = 2.5e-4.
  // Step 2: m = −0.055, v = 1.24975e-3, p = 0.89·0.99 − 0.1·(m/0.19)/(sqrt(v/0.001999) + 1e-8).
  // Tolerances are ~1e-5 relative: the options are f32, so 1 − β2 is 1 − 0.999f ≈ 0.99998e-3.
  AdamWOptions o{.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f};
  Tensor p = Tensor::FromVector({1.0f}, {1});
  Tensor m = Tensor::Zeros({1}, DType::kF32), v = Tensor::Zeros({1}, DType::kF32);
  o.step = 1;
  AdamWStep(o, Tensor::FromVector({0.5f}, {1}), &p, &m, &v, CpuStream());
  EXPECT_NEAR(p.data<float>()[0], 0.890000002, 1e-6);
  EXPECT_NEAR(m.data<float>()[0], 0.05, 5e-7);
  EXPECT_NEAR(v.data<float>()[0], 2.5e-4, 5e-9);
  o.step = 2;
  AdamWStep(o, Tensor::FromVector({-1.0f}, {1}), &p, &m, &v, CpuStream());
  EXPECT_NEAR(p.data<float>()[0], 0.9177103542205653, 1e-6);
  EXPECT_NEAR(m.data<float>()[0], -0.055, 5e-7);
  EXPECT_NEAR(v.data<float>()[0], 1.24975e-3, 2.5e-8);
}

TEST(AdamWTest, ZeroGradientOnlyDecays) {
  AdamWOptions o{.lr = 0.01f, .weight_decay = 0.5f};
  Tensor p = Tensor::FromVector({2.0f, -4.0f}, {2});
  Tensor m = Tensor::Zeros({2}, DType::kF32), v = Tensor::Zeros({2}, DType::kF32);
  AdamWStep(o, Tensor::Zeros({2}, DType::kF32), &p, &m, &v, CpuStream());
  EXPECT_TENSOR_NEAR(p, Tensor::FromVector({2.0f * 0.995f, -4.0f * 0.995f}, {2}), 1e-7, 0);
}

TEST(AdamWDeathTest, StepIsOneBased) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  AdamWOptions o;
  o.step = 0;
  Tensor p = Tensor::Zeros({1}, DType::kF32), m = p.Clone(), v = p.Clone();
  EXPECT_DEATH(AdamWStep(o, p, &p, &m, &v, CpuStream()), "step is 1-based");
}

}  // namespace
}  // namespace moefold::ops
