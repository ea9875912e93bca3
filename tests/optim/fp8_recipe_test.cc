// FP8 recipe state on one rank: refused options, the initial state, views into the group's
// tensors, the delayed-scaling history over steps (ops' amaxes in, scales out), and the
// current-scaling cast against its three ops.
#include "optim/fp8_recipe.h"

#include <cmath>
#include <limits>
#include <vector>

#include "ops/fp8.h"
#include "ops/reduce.h"
#include "tests/testing/testing.h"

namespace moefold::optim {
namespace {

using ::moefold::testing::RandomNormal;

TEST(Fp8RecipeTest, RefusesAnEmptyHistoryAndNonFp8Formats) {
  const auto zero = Fp8DelayedScaling::Create(2, {.amax_history = 0});
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(zero.status().message().find("amax_history"), std::string::npos);
  const auto bf16 = Fp8DelayedScaling::Create(2, {.amax_history = 4, .format = DType::kBF16});
  EXPECT_EQ(bf16.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fp8DelayedScaling::Create(-1, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Fp8RecipeTest, StartsWithUnitScalesAndAnEmptyHistory) {
  auto created = Fp8DelayedScaling::Create(3, {.amax_history = 5, .format = DType::kFp8E5M2});
  ASSERT_OK(created.status());
  Fp8DelayedScaling& recipe = *created;
  EXPECT_EQ(recipe.num_tensors(), 3);
  EXPECT_EQ(recipe.fp8_max(), 57344.0f);
  EXPECT_EQ(recipe.history().shape(), (Shape{5, 3}));
  EXPECT_EQ(recipe.scales().ToVector(), (std::vector<float>{1, 1, 1}));
  EXPECT_EQ(recipe.scale_invs().ToVector(), (std::vector<float>{1, 1, 1}));
  EXPECT_EQ(recipe.amaxes().ToVector(), (std::vector<float>{0, 0, 0}));
  // Views share the group's storage.
  recipe.amax(1).Fill(2.0f);
  EXPECT_EQ(recipe.amaxes().ToVector(), (std::vector<float>{0, 2, 0}));
}

TEST(Fp8RecipeTest, DelayedScalingUsesTheHistoryMax) {
  auto created = Fp8DelayedScaling::Create(2, {.amax_history = 2});
  ASSERT_OK(created.status());
  Fp8DelayedScaling& recipe = *created;
  const Tensor x0 = Tensor::FromVector({1.0f, -4.0f, 2.0f, 0.5f}, {2, 2});
  const Tensor x1 = Tensor::FromVector({0.25f, -0.5f}, {1, 2});
  Tensor y0 = Tensor::Empty({2, 2}, DType::kFp8E4M3), y1 = Tensor::Empty({1, 2}, DType::kFp8E4M3);
  auto forward = [&](float gain) {
    Tensor a0 = recipe.amax(0), a1 = recipe.amax(1);
    // Two micro-batches of tensor 0: its amax accumulates over the step.
    ops::CastTransposeAmax(x0, recipe.scale(0), &y0, nullptr, &a0, CpuStream());
    const Tensor x0_scaled = Tensor::FromVector({gain, 0, 0, 0}, {2, 2});
    ops::CastTransposeAmax(x0_scaled, recipe.scale(0), &y0, nullptr, &a0, CpuStream());
    ops::CastTransposeAmax(x1, recipe.scale(1), &y1, nullptr, &a1, CpuStream());
  };
  forward(8.0f);
  EXPECT_EQ(recipe.amaxes().ToVector(), (std::vector<float>{8.0f, 0.5f}));
  EXPECT_EQ(y0.ToVector(), (std::vector<float>{8.0f, 0, 0, 0}));  // scale 1 in the first step
  ASSERT_OK(recipe.Update(nullptr, CpuStream()));
  EXPECT_EQ(recipe.amaxes().ToVector(), (std::vector<float>{0, 0}));
  EXPECT_EQ(recipe.scales().ToVector(), (std::vector<float>{56.0f, 896.0f}));
  forward(1.0f);  // tensor 0's amax is now 4, but 8 is still in its history
  ASSERT_OK(recipe.Update(nullptr, CpuStream()));
  EXPECT_EQ(recipe.scales().ToVector(), (std::vector<float>{56.0f, 896.0f}));
  EXPECT_EQ(recipe.history().ToVector(), (std::vector<float>{4.0f, 0.5f, 8.0f, 0.5f}));
  forward(1.0f);  // the 8 rolled out (L = 2)
  ASSERT_OK(recipe.Update(nullptr, CpuStream()));
  EXPECT_EQ(recipe.scales().ToVector(), (std::vector<float>{112.0f, 896.0f}));
  EXPECT_EQ(recipe.scale_invs().ToVector(), (std::vector<float>{1.0f / 112.0f, 1.0f / 896.0f}));
}

TEST(Fp8RecipeTest, NonFiniteAmaxKeepsTheScale) {
  auto created = Fp8DelayedScaling::Create(1, {.amax_history = 1});
  ASSERT_OK(created.status());
  Fp8DelayedScaling& recipe = *created;
  recipe.amax(0).Fill(2.0f);
  ASSERT_OK(recipe.Update(nullptr, CpuStream()));
  EXPECT_EQ(recipe.scales().ToVector()[0], 224.0f);
  recipe.amax(0).Fill(std::numeric_limits<float>::quiet_NaN());
  ASSERT_OK(recipe.Update(nullptr, CpuStream()));
  EXPECT_EQ(recipe.scales().ToVector()[0], 224.0f);
  ASSERT_OK(recipe.Update(nullptr, CpuStream()));  // a zero amax (none recorded this step)
  EXPECT_EQ(recipe.scales().ToVector()[0], 224.0f);
  recipe.amax(0).Fill(7.0f);
  ASSERT_OK(recipe.Update(nullptr, CpuStream()));
  EXPECT_EQ(recipe.scales().ToVector()[0], 64.0f);
}

TEST(Fp8RecipeTest, CurrentScalingEqualsItsThreeOps) {
  const Tensor x = RandomNormal({6, 10}, 4, 3.0f).To(DType::kBF16);
  Tensor y = Tensor::Empty({6, 10}, DType::kFp8E4M3), y_t = Tensor::Empty({10, 6}, DType::kFp8E4M3);
  Tensor scale = Tensor::FromVector({1.0f}, {1}), scale_inv = Tensor::Empty({1}, DType::kF32);
  ASSERT_OK(CastCurrentScaling(x, nullptr, &y, &y_t, &scale, &scale_inv, CpuStream()));
  const float amax = ops::Amax(x, CpuStream());
  EXPECT_EQ(scale.ToVector()[0], 448.0f / amax);
  EXPECT_EQ(scale_inv.ToVector()[0], 1.0f / (448.0f / amax));
  Tensor expected = Tensor::Empty({6, 10}, DType::kFp8E4M3);
  Tensor expected_t = Tensor::Empty({10, 6}, DType::kFp8E4M3);
  ops::CastTransposeAmax(x, scale, &expected, &expected_t, nullptr, CpuStream());
  EXPECT_EQ(y.ToVector(), expected.ToVector());
  EXPECT_EQ(y_t.ToVector(), expected_t.ToVector());
  // An all-zero tensor keeps the scale it was given.
  Tensor zeros_t = Tensor::Empty({3, 2}, DType::kFp8E5M2);
  Tensor kept = Tensor::FromVector({3.0f}, {1});
  ASSERT_OK(CastCurrentScaling(Tensor::Zeros({2, 3}, DType::kF32), nullptr, nullptr, &zeros_t,
                               &kept, &scale_inv, CpuStream()));
  EXPECT_EQ(kept.ToVector()[0], 3.0f);
  EXPECT_EQ(zeros_t.ToVector(), (std::vector<float>(6, 0.0f)));
}

}  // namespace
}  // namespace moefold::optim
