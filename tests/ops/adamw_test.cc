// Tests of AdamW against two steps computed by hand (PyTorch's formulas, f64), decoupled decay, and
// the 1-based step check; the flat step equal bit for bit to AdamWStep per range on the scaled
// gradient (with the bf16 compute copy).
#include "ops/adamw.h"

#include <utility>
#include <vector>

#include "core/dtype.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::RandomNormal;

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

Tensor Ranges(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(ranges.size()), 2}, DType::kI64);
  for (size_t r = 0; r < ranges.size(); ++r) {
    t.data<int64_t>()[2 * r] = ranges[r].first;
    t.data<int64_t>()[2 * r + 1] = ranges[r].second;
  }
  return t;
}

TEST(AdamWFlatStepTest, BitIdenticalToAdamWStepPerRangeOnTheScaledGradient) {
  const int64_t n = 103;
  // No decay on [10, 25) (two adjacent ranges) and [60, 61); element 102 is the last one.
  const Tensor ranges = Ranges({{10, 20}, {20, 25}, {60, 61}});
  const std::vector<std::pair<int64_t, bool>> runs = {{0, true},   {10, false}, {25, true},
                                                      {60, false}, {61, true},  {n, true}};
  AdamWOptions o{.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  Tensor p = RandomNormal({n}, 1), m = Tensor::Zeros({n}, DType::kF32);
  Tensor v = Tensor::Zeros({n}, DType::kF32);
  Tensor p_ref = p.Clone(), m_ref = m.Clone(), v_ref = v.Clone();
  Tensor compute = Tensor::Zeros({n}, DType::kBF16);
  const Tensor scale = Tensor::FromVector({0.37f}, {1});
  for (int64_t step = 1; step <= 3; ++step) {
    o.step = step;
    const Tensor g = RandomNormal({n}, 10 + step);
    AdamWFlatStep(o, g, scale, ranges, &p, &m, &v, &compute, CpuStream());
    Tensor scaled = g.Clone();
    for (int64_t i = 0; i < n; ++i) scaled.data<float>()[i] *= 0.37f;
    for (size_t r = 0; r + 1 < runs.size(); ++r) {
      const int64_t a = runs[r].first, b = runs[r + 1].first;
      AdamWOptions ro = o;
      ro.weight_decay = runs[r].second ? o.weight_decay : 0.0f;
      Tensor pr = p_ref.Slice(a, b), mr = m_ref.Slice(a, b), vr = v_ref.Slice(a, b);
      AdamWStep(ro, scaled.Slice(a, b), &pr, &mr, &vr, CpuStream());
    }
  }
  EXPECT_EQ(p.ToVector(), p_ref.ToVector());
  EXPECT_EQ(m.ToVector(), m_ref.ToVector());
  EXPECT_EQ(v.ToVector(), v_ref.ToVector());
  EXPECT_EQ(compute.ToVector(), p.To(DType::kBF16).ToVector());
}

TEST(AdamWFlatStepTest, NoRangesAndNoComputeDecayEverything) {
  AdamWOptions o{.lr = 0.01f, .weight_decay = 0.5f};
  Tensor p = Tensor::FromVector({2.0f, -4.0f, 1.0f}, {3});
  Tensor m = Tensor::Zeros({3}, DType::kF32), v = Tensor::Zeros({3}, DType::kF32);
  Tensor undefined;
  AdamWFlatStep(o, Tensor::Zeros({3}, DType::kF32), Tensor::FromVector({2.0f}, {1}), Ranges({}), &p,
                &m, &v, &undefined, CpuStream());
  EXPECT_EQ(p.ToVector(), (std::vector<float>{2.0f * 0.995f, -4.0f * 0.995f, 0.995f}));
  AdamWFlatStep(o, Tensor::Zeros({3}, DType::kF32), Tensor::FromVector({2.0f}, {1}),
                Ranges({{0, 3}}), &p, &m, &v, nullptr, CpuStream());
  EXPECT_EQ(p.ToVector(), (std::vector<float>{2.0f * 0.995f, -4.0f * 0.995f, 0.995f}));
}

TEST(AdamWDeathTest, FlatStepChecksRanges) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  AdamWOptions o;
  Tensor p = Tensor::Zeros({4}, DType::kF32), m = p.Clone(), v = p.Clone();
  const Tensor scale = Tensor::FromVector({1.0f}, {1});
  EXPECT_DEATH(
      AdamWFlatStep(o, p, scale, Ranges({{2, 3}, {1, 2}}), &p, &m, &v, nullptr, CpuStream()),
      "not sorted");
  EXPECT_DEATH(AdamWFlatStep(o, p, scale, Ranges({{2, 5}}), &p, &m, &v, nullptr, CpuStream()),
               "not sorted");
  Tensor f32_compute = p.Clone();
  EXPECT_DEATH(AdamWFlatStep(o, p, scale, Ranges({}), &p, &m, &v, &f32_compute, CpuStream()),
               "compute must be bf16");
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
