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
// The FP8 token dispatch (core/model/fp8_dispatch.h) is on in every case but one (the unfused
// path's): EP2, ETP2 and TP2×EP2 move FP8 codes and their scales, dropless and padded to capacity,
// towards the experts in the forward (the routed rows) and the backward (their output gradients);
// Fp8DispatchTest checks that at EP2 it trains as the unfused path does (delayed: bit for bit).
// Sequence parallelism's FP8 all-gathers (core/model/fp8_gather.h) are on in every SP case;
// Fp8GatherTest checks that delayed and current train bit for bit as with bf16 gathers.
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

// Capacity mode with a capacity nothing exceeds, every expert's block padded to it.
const std::vector<std::string> kPaddedCapacity = {"model.moe.capacity_factor=8",
                                                  "model.moe.pad_to_capacity=true"};
const std::vector<std::string> kUnfused = {"precision.fp8_dispatch=false"};

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
        Fp8Layout("BlockwisePp2", "blockwise", {"parallel.pp=2"}, With(kBlockModel, kFourLayers)),
        // The FP8 token dispatch (on in every case above) under ETP's all-gather of codes and
        // scales, capacity mode's padding rows, and the unfused path (rows dispatched in the
        // activation dtype, quantised by the expert GEMM) kept equivalent too.
        Fp8Layout("DelayedEtp2", "delayed", {"parallel.etp=2"}, kEightExperts),
        Fp8Layout("DelayedEp2Capacity", "delayed", {"parallel.ep=2"},
                  With(kEightExperts, kPaddedCapacity)),
        Fp8Layout("CurrentTp2Ep2", "current", {"parallel.tp=2", "parallel.ep=2"}, kEightExperts,
                  kBf16MatrixTolerances),
        Fp8Layout("CurrentEtp2", "current", {"parallel.etp=2"}, kEightExperts,
                  kBf16MatrixTolerances),
        Fp8Layout("BlockwiseEtp2", "blockwise", {"parallel.etp=2"},
                  With(With(kBlockModel, kEightExperts), {"model.moe.expert_ffn_hidden_size=256"}),
                  kBf16MatrixTolerances),
        // The received scales saved for the backward survive the activation store's swap (4
        // layers: the last layers stay resident).
        Fp8Layout("CurrentEp2Swap", "current", {"parallel.ep=2", "memory.activation_policy=swap"},
                  kFourLayers, kBf16MatrixTolerances),
        Fp8Layout("DelayedEp2Unfused", "delayed", {"parallel.ep=2"},
                  With(kEightExperts, kUnfused)),
        // Sequence parallelism's FP8 all-gathers (core/model/fp8_gather.h; on in every SP case)
        // under the current recipe, and with the gathered codes dropped and gathered again by
        // the full recomputation, or swapped to the host and back.
        Fp8Layout("CurrentTp2Sp", "current", {"parallel.tp=2", "parallel.sequence_parallel=true"},
                  {}, kBf16MatrixTolerances),
        Fp8Layout("DelayedTp2SpRecompute", "delayed",
                  {"parallel.tp=2", "parallel.sequence_parallel=true",
                   "memory.activation_policy=recompute", "memory.recompute=full"}),
        Fp8Layout("CurrentTp2SpSwap", "current",
                  {"parallel.tp=2", "parallel.sequence_parallel=true",
                   "memory.activation_policy=swap"},
                  kFourLayers, kBf16MatrixTolerances)),
    [](const auto& info) { return std::string(info.param.name); });

// The FP8 dispatch changes what travels, not what is computed. At EP2, delayed trains bit for
// bit as the unfused path (the same codes reach the same GEMMs: the rows are cast with the
// site's scale on the sending rank instead of the receiving one, and the weight gradient's xᵀ
// codes are the received codes transposed; likewise the down projection's output gradient, cast
// with the site's gradient scale at home; the recorded amaxes meet in the stage's max). For
// blockwise the forward is the same bits (the first loss), but the experts' weight gradients
// quantise xᵀ's and d_yᵀ's 128-token tiles from the dequantised rows instead of the rows
// themselves (the receiving rank no longer holds them), which moves the later steps by FP8
// rounding: held to the bf16 matrix's bounds.
// `layout`: the parallel settings; `off`: the override that turns the FP8 exchange off.
void ExpectFusedMatchesUnfused(const char* recipe, std::vector<std::string> model, bool exact,
                               const std::vector<std::string>& layout = {"parallel.ep=2"},
                               const std::vector<std::string>& off = kUnfused) {
  if (WorldSize() != 2) GTEST_SKIP() << "runs on 2 ranks";
  model.push_back("optimizer.lr=5e-4");
  model.push_back(std::string("precision.fp8_recipe=") + recipe);
  model = With(model, layout);
  const config::ExperimentConfig fused = EquivalenceConfig(model);
  const config::ExperimentConfig unfused = EquivalenceConfig(With(model, off));
  auto groups = MakeGroups(fused, nullptr);
  const LayoutRun a = TrainLayout(fused, groups.get(), kSteps);
  const LayoutRun b = TrainLayout(unfused, groups.get(), kSteps);
  ASSERT_EQ(a.losses.size(), b.losses.size());
  EXPECT_EQ(a.losses[0], b.losses[0]) << "the forward of step 0";
  if (!exact) {
    ExpectSameTraining(a, b, recipe, kBf16MatrixTolerances);
    return;
  }
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(a.grad_norms, b.grad_norms);
  ASSERT_EQ(a.params.size(), b.params.size());
  for (const auto& [name, values] : a.params) {
    EXPECT_TRUE(values == b.params.at(name)) << name << " differs";
  }
}

TEST(Fp8DispatchTest, DelayedTrainsBitForBitAsTheUnfusedPath) {
  ExpectFusedMatchesUnfused("delayed", kEightExperts, /*exact=*/true);
}

TEST(Fp8DispatchTest, DelayedWithPaddedCapacityTrainsBitForBitAsTheUnfusedPath) {
  ExpectFusedMatchesUnfused("delayed", With(kEightExperts, kPaddedCapacity), /*exact=*/true);
}

TEST(Fp8DispatchTest, BlockwiseHasTheUnfusedForwardAndStaysClose) {
  ExpectFusedMatchesUnfused("blockwise", With(kBlockModel, kEightExperts), /*exact=*/false);
}

// Sequence parallelism's FP8 all-gathers move each rank's codes instead of its bf16 rows; the
// GEMMs get the same codes with the same scales (current: the rows' amax reduced over TP×CP is
// the gathered tensor's), so at TP2 with SP both per-tensor recipes train bit for bit as the
// bf16 gathers do — dense FFN, shared expert and attention projections alike.
const std::vector<std::string> kTp2Sp = {"parallel.tp=2", "parallel.sequence_parallel=true"};
const std::vector<std::string> kBf16Gather = {"precision.fp8_gather=false"};

TEST(Fp8GatherTest, DelayedTrainsBitForBitAsTheBf16Gathers) {
  ExpectFusedMatchesUnfused("delayed", {}, /*exact=*/true, kTp2Sp, kBf16Gather);
}

TEST(Fp8GatherTest, CurrentTrainsBitForBitAsTheBf16Gathers) {
  ExpectFusedMatchesUnfused("current", {}, /*exact=*/true, kTp2Sp, kBf16Gather);
}

TEST(Fp8GatherTest, DelayedUnfusedProducersTrainBitForBitAsTheBf16Gathers) {
  ExpectFusedMatchesUnfused("delayed", {"precision.fp8_fused_producers=false"}, /*exact=*/true,
                            kTp2Sp, kBf16Gather);
}

}  // namespace
}  // namespace moefold::train
