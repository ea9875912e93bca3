// Model parallelism on the GPU (run under mpirun with 4 ranks; skips without a GPU): the ranks
// share the one GPU through host-staged MPI and train the equivalence model in bf16 under TP2, CP2,
// EP2, TP2 folded with ETP2×EP2, and PP2, each matching the one-GPU bf16 run within the bf16
// bounds of tests/train/equivalence.h — the layouts of the CPU matrices, on the device. A 2-rank
// layout runs as two independent replicas on the 4 ranks, so one launch runs every case.
#include "core/cuda_runtime.h"
#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 10;

class CudaModelParallelTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(CudaModelParallelTest, RanksSharingOneGpuMatchOneGpu) {
  if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device (or CUDA backend not built)";
  const LayoutCase& layout = GetParam();
  const parallel::MpiCommunicator world = parallel::MpiCommunicator::World();
  if (world.size() % layout.world != 0) {
    GTEST_SKIP() << layout.name << " needs a multiple of " << layout.world << " ranks";
  }
  auto replica = world.Split(world.rank() / layout.world, world.rank(), "replica");
  ASSERT_TRUE(replica.ok()) << replica.status();
  std::vector<std::string> model = layout.model;
  model.insert(model.end(), {"train.device=cuda", "precision.compute_dtype=bf16"});
  std::vector<std::string> overrides = model;
  overrides.insert(overrides.end(), layout.overrides.begin(), layout.overrides.end());
  const config::ExperimentConfig config = EquivalenceConfig(overrides);
  auto groups = MakeGroups(config, replica->get(), parallel::CommBackend::kMpiHostStaged);
  const LayoutRun reference = TrainLayout(EquivalenceConfig(model), nullptr, kSteps);
  ExpectSameTraining(TrainLayout(config, groups.get(), kSteps), reference,
                     std::string("gpu ") + layout.name, kBf16Tolerances);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, CudaModelParallelTest,
    ::testing::Values(
        LayoutCase{"Tp2", 2, {"parallel.tp=2"}, {}},
        LayoutCase{"Cp2", 2, {"parallel.cp=2"}, {}},
        LayoutCase{"Ep2", 2, {"parallel.ep=2"}, {"model.moe.num_experts=8"}},
        LayoutCase{"Pp2", 2, {"parallel.pp=2"}, {"model.num_layers=4", "model.moe.num_experts=8"}},
        LayoutCase{"Tp2SpEtp2Ep2", 4,
                   {"parallel.tp=2", "parallel.sequence_parallel=true", "parallel.etp=2",
                    "parallel.ep=2"},
                   {"model.moe.num_experts=8"}}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moefold::train
