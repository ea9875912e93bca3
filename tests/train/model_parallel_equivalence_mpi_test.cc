// The tensor/sequence/context-parallel equivalence matrix, run under mpirun with 2, 4 and
// 8 ranks: each layout of its world size trains the tiny MoE (dense + MoE layer with a shared
// expert, GQA, vocabulary 257 split unevenly, sequence aux loss, z-loss) for 12 steps and must
// match the single-rank run within tests/train/equivalence.h's tolerances (loss and gradient norm
// per step, every gathered parameter at the end); the reweighted cases add LinUpper reweighting to
// both sides (bf16 runs of these layouts: tests/train/bf16_equivalence_mpi_test.cc). Layouts change only the
// config's parallel section.
#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 12;

LayoutCase Layout(const char* name, int world, std::vector<std::string> overrides,
                  std::vector<std::string> model = {}) {
  return {name, world, std::move(overrides), std::move(model)};
}

class ModelParallelEquivalence : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(ModelParallelEquivalence, MatchesTheSingleRankRun) {
  ExpectLayoutMatchesOneRank(GetParam(), kSteps);
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, ModelParallelEquivalence,
    ::testing::Values(
        Layout("Tp2", 2, {"parallel.tp=2"}),
        Layout("Tp2Sp", 2, {"parallel.tp=2", "parallel.sequence_parallel=true"}),
        Layout("Tp2SpTiedZero1", 2,
               {"parallel.tp=2", "parallel.sequence_parallel=true", "parallel.zero1=true"},
               {"model.tie_embeddings=true"}),
        Layout("Cp2", 2, {"parallel.cp=2"}),
        Layout("Tp4Sp", 4, {"parallel.tp=4", "parallel.sequence_parallel=true"}),
        Layout("Cp4", 4, {"parallel.cp=4"}),
        Layout("Tp2Cp2Sp", 4, {"parallel.tp=2", "parallel.cp=2", "parallel.sequence_parallel=true"}),
        Layout("Tp2Dp2", 4, {"parallel.tp=2", "parallel.dp=2"}),
        Layout("Cp2Dp2Zero1", 4, {"parallel.cp=2", "parallel.dp=2", "parallel.zero1=true"}),
        Layout("Tp2Cp2Dp2SpZero1", 8,
               {"parallel.tp=2", "parallel.cp=2", "parallel.dp=2",
                "parallel.sequence_parallel=true", "parallel.zero1=true"}),
        LayoutCase{"Tp2Dp2Reweighted", 4, {"parallel.tp=2", "parallel.dp=2"},
                   WithReweighting({}), kReweightedTolerances}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moefold::train
