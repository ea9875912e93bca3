// Data parallelism on the GPU (run under mpirun with 2 ranks; skips without a GPU): two ranks
// sharing the one GPU through host-staged MPI train the equivalence model in f32 with ZeRO-1, and
// match the single-rank GPU run step by step and at the end, as on the CPU.
#include "core/cuda_runtime.h"
#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

TEST(CudaDataParallelTest, TwoRanksOnOneGpuMatchOneRank) {
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device (or CUDA backend not built)";
  constexpr int kSteps = 10;
  const config::ExperimentConfig config =
      EquivalenceConfig({"train.device=cuda", "parallel.zero1=true"});
  auto groups = MakeGroups(config, nullptr, parallel::CommBackend::kMpiHostStaged);
  const LayoutRun reference =
      TrainLayout(EquivalenceConfig({"train.device=cuda"}), nullptr, kSteps);
  ExpectSameTraining(TrainLayout(config, groups.get(), kSteps), reference, "gpu dp2 zero1");
}

}  // namespace
}  // namespace moefold::train
