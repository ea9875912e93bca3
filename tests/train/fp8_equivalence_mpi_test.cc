// FP8 layout equivalence (under mpirun with 2 ranks): the equivalence model in bf16 with an FP8
// recipe trains 12 steps under TP2 (with and without SP), EP2 folded over DP2, and PP2 to the
// one-rank FP8 run within the bf16 matrix's tolerances (loss 1e-3 per step, gradient norm 1e-2,
// parameters 2e-2; tests/train/bf16_equivalence_mpi_test.cc). That proves the amax reductions:
// the delayed recipe reduces each step's amaxes over the stage (TP×CP×DP), the current recipe each
// dense operand's over TP×CP and each expert weight's over ETP, so every layout casts with the
// one-rank scales. Blockwise needs 128-wide projections: its cases use a 128-wide model
// (EP2, PP2; TP2 would need 256-wide ones).
#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 12;
constexpr Tolerances kBf16MatrixTolerances{.loss_rel = 1e-3, .grad_norm_rel = 1e-2,
                                           .param_abs = 2e-2};

LayoutCase Fp8Layout(const char* name, const char* recipe, std::vector<std::string> overrides,
                     std::vector<std::string> model = {}) {
  model.push_back("precision.compute_dtype=bf16");
  model.push_back("optimizer.lr=5e-4");
  model.push_back(std::string("precision.fp8_recipe=") + recipe);
  return {name, 2, std::move(overrides), std::move(model), kBf16MatrixTolerances};
}

const std::vector<std::string> kEightExperts = {"model.moe.num_experts=8"};
const std::vector<std::string> kFourLayers = {"model.num_layers=4", "model.moe.num_experts=8"};
// Every projection 128 or 256 wide (hidden 128, 4 heads of 32 over 2 KV heads, FFNs 128).
const std::vector<std::string> kBlockModel = {
    "model.hidden_size=128", "model.num_heads=4", "model.num_kv_heads=2", "model.head_dim=32",
    "model.ffn_hidden_size=128", "model.moe.expert_ffn_hidden_size=128"};

std::vector<std::string> With(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class Fp8Equivalence : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(Fp8Equivalence, MatchesTheSingleRankFp8Run) {
  ExpectLayoutMatchesOneRank(GetParam(), kSteps);
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, Fp8Equivalence,
    ::testing::Values(
        Fp8Layout("DelayedTp2", "delayed", {"parallel.tp=2"}),
        Fp8Layout("DelayedTp2Sp", "delayed", {"parallel.tp=2", "parallel.sequence_parallel=true"}),
        Fp8Layout("DelayedEp2", "delayed", {"parallel.ep=2"}, kEightExperts),
        Fp8Layout("DelayedPp2", "delayed", {"parallel.pp=2"}, kFourLayers),
        Fp8Layout("CurrentTp2", "current", {"parallel.tp=2"}),
        Fp8Layout("CurrentEp2", "current", {"parallel.ep=2"}, kEightExperts),
        Fp8Layout("CurrentPp2", "current", {"parallel.pp=2"}, kFourLayers),
        Fp8Layout("BlockwiseEp2", "blockwise", {"parallel.ep=2"}, With(kBlockModel, kEightExperts)),
        Fp8Layout("BlockwisePp2", "blockwise", {"parallel.pp=2"}, With(kBlockModel, kFourLayers))),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moefold::train
