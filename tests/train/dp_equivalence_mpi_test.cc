// Data-parallel equivalence (run under mpirun with 4 ranks): the tiny MoE trained 20 steps with DP = 2
// and DP = 4, with and without ZeRO-1, matches the single-rank run step by step (loss within 1e-5
// relative) and at the end (parameters within 1e-4).
#include <mpi.h>

#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 20;

const LayoutRun& Reference() {
  static const LayoutRun* reference = new LayoutRun(TrainLayout(EquivalenceConfig(), nullptr, kSteps));
  return *reference;
}

// DP over `dp` consecutive world ranks (world 4 = 4 / dp independent replicas of the same run).
void RunDataParallel(int dp, bool zero1) {
  const parallel::MpiCommunicator world = parallel::MpiCommunicator::World();
  auto replica = world.Split(world.rank() / dp, world.rank(), "replica");
  ASSERT_TRUE(replica.ok()) << replica.status();
  const config::ExperimentConfig config =
      EquivalenceConfig({std::string("parallel.zero1=") + (zero1 ? "true" : "false")});
  auto groups = MakeGroups(config, replica->get());
  ExpectSameTraining(TrainLayout(config, groups.get(), kSteps), Reference(),
                     "dp" + std::to_string(dp) + (zero1 ? " zero1" : ""));
}

TEST(DataParallelEquivalence, Dp2) { RunDataParallel(2, false); }
TEST(DataParallelEquivalence, Dp4) { RunDataParallel(4, false); }
TEST(DataParallelEquivalence, Dp2Zero1) { RunDataParallel(2, true); }
TEST(DataParallelEquivalence, Dp4Zero1) { RunDataParallel(4, true); }

}  // namespace
}  // namespace moefold::train
