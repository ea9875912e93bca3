// Data-parallel equivalence (run under mpirun with 4 ranks): the tiny MoE trained 20 steps with DP
// = 2 and DP = 4, with and without ZeRO-1, and with bf16 activations, matches the single-rank run
// of the same precision step by step (loss and gradient norm) and at the end (parameters), within
// the tolerances of the precision (tests/train/equivalence.h).
#include <mpi.h>

#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 20;

// DP over `dp` consecutive world ranks (world 4 = 4 / dp independent replicas of the same run).
// Every DP rank's micro-batches hold the same samples as the single rank's, so bf16 activations
// round alike and only the gradients' f32 sums are ordered differently.
void RunDataParallel(int dp, bool zero1, const std::string& dtype = "f32",
                     bool reweighted = false) {
  const parallel::MpiCommunicator world = parallel::MpiCommunicator::World();
  auto replica = world.Split(world.rank() / dp, world.rank(), "replica");
  ASSERT_TRUE(replica.ok()) << replica.status();
  std::vector<std::string> precision = {"precision.compute_dtype=" + dtype};
  if (reweighted) precision = WithReweighting(precision);
  std::vector<std::string> overrides = precision;
  overrides.push_back(std::string("parallel.zero1=") + (zero1 ? "true" : "false"));
  const config::ExperimentConfig config = EquivalenceConfig(overrides);
  auto groups = MakeGroups(config, replica->get());
  ExpectSameTraining(TrainLayout(config, groups.get(), kSteps),
                     SingleRankReference(precision, kSteps),
                     "dp" + std::to_string(dp) + (zero1 ? " zero1 " : " ") + dtype +
                         (reweighted ? " reweighted" : ""),
                     dtype == "bf16" ? kBf16Tolerances
                     : reweighted    ? kReweightedTolerances
                                     : kF32Tolerances);
}

TEST(DataParallelEquivalence, Dp2) { RunDataParallel(2, false); }
TEST(DataParallelEquivalence, Dp4) { RunDataParallel(4, false); }
TEST(DataParallelEquivalence, Dp2Zero1) { RunDataParallel(2, true); }
TEST(DataParallelEquivalence, Dp4Zero1) { RunDataParallel(4, true); }
TEST(DataParallelEquivalence, Dp2Zero1Bf16) { RunDataParallel(2, true, "bf16"); }
TEST(DataParallelEquivalence, Dp4Reweighted) { RunDataParallel(4, false, "f32", true); }

}  // namespace
}  // namespace moefold::train
