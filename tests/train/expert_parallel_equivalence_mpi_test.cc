// The expert-parallel equivalence matrix, under mpirun with 2, 4 and 8 ranks: MoE
// layers on their own mesh (ETP × EP × EDP) folded over the attention mesh (TP × CP × DP), each
// dropless layout training the tiny MoE (8 experts top-2, shared expert, sequence aux loss, z-loss)
// 12 steps to the single-rank result within tests/train/equivalence.h's tolerances (loss and
// gradient norm per step, every gathered parameter); the reweighted case adds LinUpper
// reweighting to both sides. Capacity mode with a capacity nothing exceeds (padded or
// not) must equal dropless too.
// Under EP the dispatcher pipelines two expert chunks by default, so these layouts also prove the
// chunked exchange equal to the unchunked one-rank run; two cases set other chunk counts. bf16 runs
// of these layouts: tests/train/bf16_equivalence_mpi_test.cc.
#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 12;

LayoutCase Layout(const char* name, int world, std::vector<std::string> overrides,
                  std::vector<std::string> model = {"model.moe.num_experts=8"}) {
  return {name, world, std::move(overrides), std::move(model)};
}

class ExpertParallelEquivalence : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(ExpertParallelEquivalence, MatchesTheSingleRankRun) {
  ExpectLayoutMatchesOneRank(GetParam(), kSteps, /*check_aux=*/true);
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, ExpertParallelEquivalence,
    ::testing::Values(
        Layout("Ep2", 2, {"parallel.ep=2"}),
        // Chunks on one EP rank (views of the rows, no exchange) and uneven chunks under ETP×EP.
        Layout("Dp2TwoExpertChunks", 2, {"model.moe.dispatch_chunks=2"}),
        Layout("Etp2Ep2ThreeChunks", 4,
               {"parallel.etp=2", "parallel.ep=2", "model.moe.dispatch_chunks=3"}),
        Layout("Tp2SpEp2Folded", 2,
               {"parallel.tp=2", "parallel.sequence_parallel=true", "parallel.ep=2"}),
        Layout("Ep4", 4, {"parallel.ep=4"}),
        Layout("Etp2Ep2", 4, {"parallel.etp=2", "parallel.ep=2"}),
        Layout("Tp2Cp2SpEp4", 4,
               {"parallel.tp=2", "parallel.cp=2", "parallel.sequence_parallel=true",
                "parallel.ep=4"}),
        Layout("Tp2Dp2Ep2Edp2", 4, {"parallel.tp=2", "parallel.dp=2", "parallel.ep=2"}),
        LayoutCase{"Tp2Dp2Ep2Edp2Reweighted", 4,
                   {"parallel.tp=2", "parallel.dp=2", "parallel.ep=2"},
                   WithReweighting({"model.moe.num_experts=8"}), kReweightedTolerances},
        Layout("Cp2Dp2Ep4Zero1", 4,
               {"parallel.cp=2", "parallel.dp=2", "parallel.ep=4", "parallel.zero1=true"}),
        Layout("Tp2SpDp2Etp2Ep2", 4,
               {"parallel.tp=2", "parallel.sequence_parallel=true", "parallel.etp=2",
                "parallel.ep=2"}),
        Layout("CapacityNeverReachedEqualsDropless", 4,
               {"parallel.ep=4", "model.moe.capacity_factor=8"}),
        Layout("PaddedCapacityEqualsDropless", 4,
               {"parallel.etp=2", "parallel.ep=2", "model.moe.capacity_factor=8",
                "model.moe.pad_to_capacity=true"}),
        Layout("Ep8",
               8,
               {"parallel.ep=8"},
               {"model.moe.num_experts=8", "train.micro_batch_size=1"}),
        Layout("Tp2Cp2Dp2SpEtp2Ep4Zero1", 8,
               {"parallel.tp=2", "parallel.cp=2", "parallel.dp=2",
                "parallel.sequence_parallel=true", "parallel.etp=2", "parallel.ep=4",
                "parallel.zero1=true"})),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moefold::train
