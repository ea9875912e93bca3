// The activation store at a five-dimensional layout, under mpirun with 8 ranks: PP2 × TP2 × DP2
// with the MoE layers folded onto EP4 (1F1B), the 4-layer tiny MoE with a shared expert. Each policy
// (recompute selective and full, swap α = 0.5 and 1) trains 10 steps bit-identically to keep at the
// same layout: losses, gradient norms and every gathered parameter. Under EP the dispatcher's rows
// are kept (or swapped whole), never re-exchanged. And swap_auto's α is every rank's smallest.
#include <mpi.h>

#include "core/train/activation_setup.h"
#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 10;

const std::vector<std::string> kLayout = {
    "model.num_layers=4", "model.moe.num_experts=8", "parallel.pp=2",  "parallel.tp=2",
    "parallel.dp=2",      "parallel.ep=4",           "parallel.schedule=1f1b"};

LayoutRun Train(const std::vector<std::string>& policy) {
  std::vector<std::string> overrides = kLayout;
  overrides.insert(overrides.end(), policy.begin(), policy.end());
  const config::ExperimentConfig config = EquivalenceConfig(overrides);
  auto groups = MakeGroups(config, nullptr);
  return TrainLayout(config, groups.get(), kSteps);
}

class ActivationPolicyLayout : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(ActivationPolicyLayout, Pp2Tp2Dp2Ep4TrainsBitIdenticallyToKeep) {
  if (WorldSize() != 8) GTEST_SKIP() << "runs on 8 ranks";
  static const LayoutRun keep = Train({});
  const LayoutRun run = Train(GetParam());
  ASSERT_EQ(run.losses.size(), keep.losses.size());
  for (size_t s = 0; s < keep.losses.size(); ++s) {
    EXPECT_EQ(run.losses[s], keep.losses[s]) << "loss at step " << s;
    EXPECT_EQ(run.grad_norms[s], keep.grad_norms[s]) << "gradient norm at step " << s;
  }
  for (const auto& [name, values] : keep.params) {
    EXPECT_TRUE(run.params.at(name) == values) << name << " differs on rank " << WorldRank();
  }
}

const std::vector<std::vector<std::string>> kPolicies = {
    {"memory.activation_policy=recompute", "memory.recompute=selective"},
    {"memory.activation_policy=recompute", "memory.recompute=full"},
    {"memory.activation_policy=swap", "memory.swap_fraction=0.5"},
    {"memory.activation_policy=swap", "memory.swap_fraction=1"}};

std::string PolicyName(const ::testing::TestParamInfo<std::vector<std::string>>& info) {
  static const char* kNames[] = {"Selective", "Full", "SwapHalf", "SwapAll"};
  return kNames[info.index];
}

INSTANTIATE_TEST_SUITE_P(Policies, ActivationPolicyLayout, ::testing::ValuesIn(kPolicies),
                         PolicyName);

// swap_auto: each rank measures its own α; the store of every rank gets the smallest. Rank 0's
// host link is made almost unusable (its α near 0), the others' practically free (α = 1 alone).
TEST(SwapAutoTest, EveryRankSwapsTheSmallestAlpha) {
  parallel::MpiCommunicator world = parallel::MpiCommunicator::World("world");
  const int rank = world.rank();
  const std::vector<std::string> overrides = {
      "memory.activation_policy=swap", "memory.swap_auto=true",
      rank == 0 ? "memory.host_link_gbps=1e-9" : "memory.host_link_gbps=1e9"};
  const config::ExperimentConfig config = EquivalenceConfig(overrides);
  auto alone = MakeActivationStore(config, nullptr, 0, Device::Cpu());
  ASSERT_OK(alone);
  if (rank != 0) EXPECT_EQ((*alone)->policy().swap_fraction, 1.0f) << "rank " << rank;
  auto store = MakeActivationStore(config, nullptr, 0, Device::Cpu(), &world);
  ASSERT_OK(store);
  const float alpha = (*store)->policy().swap_fraction;
  EXPECT_LT(alpha, 0.01f);
  float lowest = 0, highest = 0;
  MPI_Allreduce(&alpha, &lowest, 1, MPI_FLOAT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&alpha, &highest, 1, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(lowest, highest) << "every rank swaps one share";
}

}  // namespace
}  // namespace moefold::train
