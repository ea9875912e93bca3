// FP8 layout equivalence (under mpirun with 2 ranks): the equivalence model with an FP8 recipe
// (f32 activations, so that FP8 is the only rounding a layout could change) trains 12 steps under
// TP2 (delayed also with SP), EP2 folded over DP2, and PP2 against the one-rank FP8 run.
// Where the recipe's scales are layout-invariant the match is at f32 tolerance — which is what
// proves the amax reductions: delayed amaxes reduced over the stage (TP×CP×DP) each step, current
// amaxes of dense operands over TP×CP, blockwise tiles along rows. (Without the stage reduction,
// or with local expert indices as scale slots, DelayedTp2 and DelayedEp2 fail here.) Two
// quantisations depend on which rows meet on a rank by design, and those cases are held to the
// bf16 matrix's bounds (loss 1e-3 per step, gradient norm 1e-2, parameters 2e-2;
// tests/train/bf16_equivalence_mpi_test.cc): the current recipe's expert rows (their amax is over
// this rank's rows, a share of a micro-batch under TP and a mix of micro-batches under EP) and
// the blockwise weight gradient of experts (its 128-token tiles run over the rows a rank holds).
// Measured there: ≤ 3e-4 loss, 2.5e-3 gradient norm, 2.4e-3 parameters. Blockwise needs 128-wide
// projections: its cases use a 128-wide model (EP2, PP2; TP2 would need 256-wide ones).
#include "gtest/gtest.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 12;
constexpr Tolerances kBf16MatrixTolerances{.loss_rel = 1e-3, .grad_norm_rel = 1e-2,
                                           .param_abs = 2e-2};

LayoutCase Fp8Layout(const char* name, const char* recipe, std::vector<std::string> overrides,
                     std::vector<std::string> model = {},
                     const Tolerances& tolerances = kF32Tolerances) {
  model.push_back("optimizer.lr=5e-4");
  model.push_back(std::string("precision.fp8_recipe=") + recipe);
  return {name, 2, std::move(overrides), std::move(model), tolerances};
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
        Fp8Layout("CurrentTp2", "current", {"parallel.tp=2"}, {}, kBf16MatrixTolerances),
        Fp8Layout("CurrentEp2", "current", {"parallel.ep=2"}, kEightExperts,
                  kBf16MatrixTolerances),
        Fp8Layout("CurrentPp2", "current", {"parallel.pp=2"}, kFourLayers),
        Fp8Layout("BlockwiseEp2", "blockwise", {"parallel.ep=2"}, With(kBlockModel, kEightExperts),
                  kBf16MatrixTolerances),
        Fp8Layout("BlockwisePp2", "blockwise", {"parallel.pp=2"}, With(kBlockModel, kFourLayers))),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moefold::train
