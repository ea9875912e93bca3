// FP8 scaling over ranks that share tensors (mpirun, 2 ranks): each rank sees a different part of
// a tensor, and after the step every rank holds the scales a single rank seeing all of it computes.
#include <algorithm>
#include <vector>

#include "gtest/gtest.h"
#include "optim/fp8_recipe.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::optim {
namespace {

TEST(Fp8RecipeMpiTest, DelayedScalingReducesTheAmaxesOverTheRanks) {
  parallel::MpiCommunicator world = parallel::MpiCommunicator::World("tp");
  const int rank = world.rank();
  auto created = Fp8DelayedScaling::Create(2, {.amax_history = 3});
  ASSERT_OK(created.status());
  Fp8DelayedScaling& recipe = *created;
  auto reference = Fp8DelayedScaling::Create(2, {.amax_history = 3});
  ASSERT_OK(reference.status());
  for (int step = 0; step < 4; ++step) {
    // Rank r's amaxes; the single-rank reference sees the max over the ranks.
    const std::vector<float> mine = {static_cast<float>(1 + rank + step),
                                     static_cast<float>(8 - 2 * rank * step)};
    recipe.amaxes().CopyFrom(Tensor::FromVector(mine, {2}));
    std::vector<float> all = {0, 0};
    for (int r = 0; r < world.size(); ++r) {
      all[0] = std::max(all[0], static_cast<float>(1 + r + step));
      all[1] = std::max(all[1], static_cast<float>(8 - 2 * r * step));
    }
    reference->amaxes().CopyFrom(Tensor::FromVector(all, {2}));
    ASSERT_OK(recipe.Update(&world, CpuStream()));
    ASSERT_OK(reference->Update(nullptr, CpuStream()));
    EXPECT_EQ(recipe.history().ToVector(), reference->history().ToVector()) << "step " << step;
    EXPECT_EQ(recipe.scales().ToVector(), reference->scales().ToVector()) << "step " << step;
    EXPECT_EQ(recipe.scale_invs().ToVector(), reference->scale_invs().ToVector());
  }
}

TEST(Fp8RecipeMpiTest, CurrentScalingUsesTheAmaxOfAllRanks) {
  parallel::MpiCommunicator world = parallel::MpiCommunicator::World("tp");
  const float peak = 2.0f * static_cast<float>(world.size());  // on the last rank only
  const float mine = world.rank() == world.size() - 1 ? peak : 1.0f;
  const Tensor x = Tensor::FromVector({0.5f, -mine}, {1, 2});
  Tensor y = Tensor::Empty({1, 2}, DType::kFp8E4M3);
  Tensor scale = Tensor::FromVector({1.0f}, {1}), scale_inv = Tensor::Empty({1}, DType::kF32);
  ASSERT_OK(CastCurrentScaling(x, &world, &y, nullptr, &scale, &scale_inv, CpuStream()));
  EXPECT_EQ(scale.ToVector()[0], 448.0f / peak);
}

}  // namespace
}  // namespace moefold::optim
