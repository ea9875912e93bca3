// Skips agreed at a 5-D layout (TP2 with SP × CP2 × PP2, experts folded ETP2 × EP2; 8 ranks): one
// rank alone sees a non-finite loss at step 3 (injected: its copy of a reduced value corrupted),
// and every rank must skip that step's update — with a rank updating alone the layout would
// diverge from one rank trained with the same step skipped, which is the comparison here.
#include <mpi.h>

#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 6, kSkippedStep = 3, kSeeingRank = 5;

// kSteps steps, this rank seeing a non-finite loss at `anomaly_step`; every step's skip flag.
LayoutRun Train(const config::ExperimentConfig& config, const parallel::ProcessGroups* groups,
                int64_t anomaly_step, std::vector<int>* skipped) {
  TrainerOptions options;
  options.groups = groups;
  options.local_anomaly_step = anomaly_step;
  return TrainLayout(config, options, kSteps,
                     [&](const StepResult& r) { skipped->push_back(r.skipped ? 1 : 0); });
}

TEST(SkipAgreement, ASkipSeenByOneRankIsASkipOnEveryRankAtA5DLayout) {
  if (WorldSize() != 8) GTEST_SKIP() << "needs 8 ranks";
  const std::vector<std::string> model = {"model.num_layers=4", "model.moe.num_experts=8"};
  std::vector<std::string> layout = {"parallel.pp=2", "parallel.cp=2", "parallel.tp=2",
                                     "parallel.sequence_parallel=true", "parallel.etp=2",
                                     "parallel.ep=2"};
  layout.insert(layout.end(), model.begin(), model.end());
  const config::ExperimentConfig config = EquivalenceConfig(layout);
  auto groups = MakeGroups(config, nullptr);
  std::vector<int> skipped;
  const LayoutRun run = Train(config, groups.get(),
                              WorldRank() == kSeeingRank ? kSkippedStep : -1, &skipped);
  // Every rank's skip flags, step by step: equal everywhere, set at the injected step only.
  std::vector<int> all(kSteps * WorldSize());
  MPI_Allgather(skipped.data(), kSteps, MPI_INT, all.data(), kSteps, MPI_INT, MPI_COMM_WORLD);
  for (int rank = 0; rank < WorldSize(); ++rank) {
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_EQ(all[rank * kSteps + s], s == kSkippedStep ? 1 : 0)
          << "rank " << rank << " step " << s;
    }
  }
  // One rank skipping the same step: the same training.
  std::vector<int> reference_skipped;
  const LayoutRun reference =
      Train(EquivalenceConfig(model), nullptr, kSkippedStep, &reference_skipped);
  EXPECT_EQ(reference_skipped[kSkippedStep], 1);
  ExpectSameTraining(run, reference, "Pp2Cp2Tp2SpFoldedEtp2Ep2 with a skip");
}

}  // namespace
}  // namespace moefold::train
