// The activation store on one rank: every policy (recompute selective and full, swap α = 0.5 and 1,
// a per-kind mix, a subset of layers) trains the tiny model (dense layer + MoE layer with a shared
// expert; and MoE without shared experts; and capacity mode, dropping) 10 steps bit-identically to keep —
// losses, gradient norms and every parameter. And the measured activation peak (CPU allocator
// high-water mark over the step, host arena for the swapped rows) stays within 10% of
// `moefold plan`'s estimate for each policy on a config where activations dominate, with full
// recomputation ≥ 3× and swap α = 1 ≥ 2× below keep on the "device".
#include <cstdio>

#include "core/allocator.h"
#include "absl/strings/str_cat.h"
#include "core/model/activation_store.h"
#include "core/model/recompute_rows.h"
#include "core/train/memory_plan.h"
#include "gtest/gtest.h"
#include "parallel/mapping.h"
#include "tests/testing/testing.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 10;

void ExpectBitIdentical(const LayoutRun& run, const LayoutRun& keep, const std::string& label) {
  ASSERT_EQ(run.losses.size(), keep.losses.size());
  for (size_t s = 0; s < keep.losses.size(); ++s) {
    EXPECT_EQ(run.losses[s], keep.losses[s]) << label << " loss at step " << s;
    EXPECT_EQ(run.grad_norms[s], keep.grad_norms[s]) << label << " gradient norm at step " << s;
  }
  ASSERT_EQ(run.params.size(), keep.params.size());
  for (const auto& [name, values] : keep.params) {
    auto it = run.params.find(name);
    ASSERT_NE(it, run.params.end()) << name;
    EXPECT_TRUE(it->second == values) << label << ": " << name << " differs";
  }
}

const std::vector<std::vector<std::string>> kPolicies = {
    {"memory.activation_policy=recompute", "memory.recompute=selective"},
    {"memory.activation_policy=recompute", "memory.recompute=full"},
    {"memory.activation_policy=swap", "memory.swap_fraction=0.5"},
    {"memory.activation_policy=swap", "memory.swap_fraction=1"},
    // Swapping every layer (none resident) and recomputing only layer 1.
    {"memory.activation_policy=swap", "memory.swap_fraction=0.25", "memory.resident_layers=0"},
    {"memory.activation_policy=recompute", "memory.recompute=full", "memory.recompute_layers=1"},
    // MEMO's split at an odd α over a token count it does not divide (2 × 13 rows: ⌊0.3·26⌋ = 7
    // swapped, 19 recomputed), every layer.
    {"memory.activation_policy=swap", "memory.swap_fraction=0.3", "memory.resident_layers=0",
     "train.seq_len=13"},
};

std::string Label(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " ";
  return s;
}

void ExpectEveryPolicyMatchesKeep(const std::vector<std::string>& model) {
  const LayoutRun keep = TrainLayout(EquivalenceConfig(model), nullptr, kSteps);
  for (const auto& policy : kPolicies) {
    std::vector<std::string> overrides = model;
    overrides.insert(overrides.end(), policy.begin(), policy.end());
    // A policy that changes the sequence length compares with keep at that length.
    const bool seq = overrides.back().rfind("train.seq_len", 0) == 0;
    std::vector<std::string> keep_overrides = model;
    if (seq) keep_overrides.push_back(overrides.back());
    const LayoutRun base =
        seq ? TrainLayout(EquivalenceConfig(keep_overrides), nullptr, kSteps) : keep;
    ExpectBitIdentical(TrainLayout(EquivalenceConfig(overrides), nullptr, kSteps), base,
                       Label(policy));
  }
}

TEST(ActivationPolicyTest, DenseAndSharedExpertMoeLayersTrainBitIdenticallyToKeep) {
  ExpectEveryPolicyMatchesKeep({});
}

TEST(ActivationPolicyTest, MoeWithoutSharedExpertsAndBalancedSequenceAuxTrainsBitIdentically) {
  ExpectEveryPolicyMatchesKeep({"model.moe.num_shared_experts=0", "model.num_layers=3"});
}

TEST(ActivationPolicyTest, CapacityModeTrainsBitIdentically) {
  ExpectEveryPolicyMatchesKeep({"model.moe.capacity_factor=1.0"});
}

// FP8: recomputation reruns the projections through the same recipe (the same scales and casts),
// so every recipe also trains bit-identically under every policy — with the token-wise split
// (swap α = 0.5 and 0.3, every layer): a row block of the input quantises with the delayed scale
// (history; a block's amax never raises the recorded max) as the whole does, and the current
// recipe (the amax of the whole input) recomputes whole. (Blockwise needs 128-column tiles, more
// than this model's hidden size; it recomputes whole too.)
TEST(ActivationPolicyTest, Fp8RecipesTrainBitIdenticallyUnderRecomputeAndSwap) {
  const std::vector<std::string> swap_half = {"memory.activation_policy=swap",
                                              "memory.swap_fraction=0.5",
                                              "memory.resident_layers=0"};
  const std::vector<std::string> swap_odd = {"memory.activation_policy=swap",
                                             "memory.swap_fraction=0.3",
                                             "memory.resident_layers=0"};
  for (const char* recipe : {"precision.fp8_recipe=delayed", "precision.fp8_recipe=current"}) {
    const std::vector<std::string> model = {recipe, "model.num_layers=2"};
    const LayoutRun keep = TrainLayout(EquivalenceConfig(model), nullptr, 4);
    for (const auto& policy : {kPolicies[0], kPolicies[1], kPolicies[3], swap_half, swap_odd}) {
      std::vector<std::string> overrides = model;
      overrides.insert(overrides.end(), policy.begin(), policy.end());
      ExpectBitIdentical(TrainLayout(EquivalenceConfig(overrides), nullptr, 4), keep,
                         std::string(recipe) + " " + Label(policy));
    }
  }
}

// The split recomputes only the rows that were not swapped: on dense layers with every row-separable
// kind swapped (norm outputs, q/k/v, the residual, SwiGLU's input and output), a layer's recompute
// produces, of each of its 10 such tensors' N token rows, those from r = ⌊α·N⌋ on — from r rounded
// down to the projections' row block for the 7 a projection's GEMM produces (q, k, v, gate_up, and
// h, the FFN input and its rstd behind the output projection). Against α = 0 (every row
// recomputed) the rows shrink by exactly that share. Fails if a layer recomputes a whole tensor.
int64_t RecomputedRows(float alpha, int64_t seq_len) {
  config::ExperimentConfig config = EquivalenceConfig(
      {"model.moe.layer_freq=0", "memory.resident_layers=0",
       absl::StrCat("memory.swap_fraction=", alpha), absl::StrCat("train.seq_len=", seq_len)});
  auto& kinds = *config.mutable_memory()->mutable_tensor_policy();
  for (const char* kind : {"norm_output", "attention_qkv", "residual", "swiglu_input",
                           "swiglu_output"}) {
    kinds[kind] = "swap";
  }
  const int64_t before = model::RecomputedRowsTotal();
  TrainLayout(config, nullptr, 2);
  return model::RecomputedRowsTotal() - before;
}

TEST(ActivationPolicyTest, TheSplitRecomputesOnlyTheRowsThatWereNotSwapped) {
  for (const auto& [alpha, seq] : {std::pair<float, int64_t>{0.5f, 16}, {0.7f, 13}}) {
    const int64_t rows = 2 * seq;  // a micro-batch's token rows
    const int64_t r = static_cast<int64_t>(alpha * static_cast<float>(rows));
    const int64_t recomputed = 7 * (rows - model::GemmBlockStart(r, rows)) + 3 * (rows - r);
    const int64_t all = RecomputedRows(0.0f, seq), split = RecomputedRows(alpha, seq);
    ASSERT_GT(all, 0);
    EXPECT_EQ(all % (10 * rows), 0) << "10 tensors of " << rows << " rows a layer";
    EXPECT_EQ(split * 10 * rows, all * recomputed)
        << "α = " << alpha << ": " << split << " rows recomputed of " << all;
    EXPECT_LE(2 * split, all) << "at most half the rows at α ≥ 0.5";
  }
}

// The attention core's outputs can only be recomputed whole (a query row reads every earlier key),
// so a swap at 0 < α < 1 moves all their rows and the backward never reruns the core; α = 0 keeps
// its meaning (recompute everything). Fails if α of their rows went to the host and the core ran
// again over every row, as it did before.
TEST(ActivationPolicyTest, TensorsRecomputedOnlyWholeAreSwappedWhole) {
  auto recomputed = [](float alpha) {
    config::ExperimentConfig config = EquivalenceConfig(
        {"model.moe.layer_freq=0", "memory.resident_layers=0",
         absl::StrCat("memory.swap_fraction=", alpha)});
    auto& kinds = *config.mutable_memory()->mutable_tensor_policy();
    kinds["attention_output"] = "swap";
    kinds["attention_lse"] = "swap";
    const int64_t before = model::RecomputedRowsTotal();
    const LayoutRun run = TrainLayout(config, nullptr, 2);
    return std::make_pair(model::RecomputedRowsTotal() - before, run);
  };
  const auto [none, keep_all] = recomputed(0.0f);
  const auto [half, swapped] = recomputed(0.5f);
  EXPECT_GT(none, 0) << "α = 0 recomputes the attention core";
  EXPECT_EQ(half, 0) << "α = 0.5 must bring the core's outputs back whole";
  ExpectBitIdentical(swapped, keep_all, "attention outputs swapped whole");
}

// A per-kind policy from the config map: the router's tensors swapped, the attention output
// recomputed, the rest kept.
TEST(ActivationPolicyTest, PerKindPoliciesTrainBitIdentically) {
  config::ExperimentConfig keep_config = EquivalenceConfig();
  const LayoutRun keep = TrainLayout(keep_config, nullptr, kSteps);
  config::ExperimentConfig mixed = keep_config;
  auto& kinds = *mixed.mutable_memory()->mutable_tensor_policy();
  kinds["router"] = "swap";
  kinds["attention_output"] = "recompute";
  kinds["residual"] = "recompute";
  mixed.mutable_memory()->set_resident_layers(0);
  ExpectBitIdentical(TrainLayout(mixed, nullptr, kSteps), keep, "per-kind");
}

// Activations dominate: 16 layers (1 dense, 15 MoE), 512 tokens a micro-batch, hidden 64.
std::vector<std::string> MemoryConfig(const std::vector<std::string>& policy) {
  std::vector<std::string> c = {"model.hidden_size=64",  "model.num_layers=16",
                                "model.num_heads=4",     "model.num_kv_heads=2",
                                "model.head_dim=16",     "model.ffn_hidden_size=256",
                                "model.moe.num_experts=4",
                                "model.moe.expert_ffn_hidden_size=128",
                                "train.seq_len=256",     "train.micro_batch_size=2",
                                "train.global_batch_size=2"};
  c.insert(c.end(), policy.begin(), policy.end());
  return c;
}

struct Measured {
  int64_t device_peak = 0;  // CPU allocator high-water mark over a step, above its start
  int64_t host_peak = 0;    // the host arena's
  MemoryEstimate estimate;
};

Measured Measure(const std::vector<std::string>& policy) {
  const config::ExperimentConfig config = EquivalenceConfig(MemoryConfig(policy));
  TrainerOptions options;
  options.write_metrics = false;
  options.print_progress = false;
  auto trainer = Trainer::Create(config, options);
  MF_CHECK(trainer.ok()) << trainer.status();
  MF_CHECK((*trainer)->Step(0).ok());  // optimizer state and buffers exist after the first step
  Measured m;
  const int64_t base = static_cast<int64_t>(CpuMemory().current_bytes());
  const int64_t host_base = static_cast<int64_t>(model::ActivationStore::CpuHostArena().current_bytes());
  CpuMemory().ResetPeak();
  model::ActivationStore::CpuHostArena().ResetPeak();
  MF_CHECK((*trainer)->Step(1).ok());
  m.device_peak = static_cast<int64_t>(CpuMemory().peak_bytes()) - base;
  m.host_peak =
      static_cast<int64_t>(model::ActivationStore::CpuHostArena().peak_bytes()) - host_base;
  auto mapping = parallel::Mapping::Create(1, {});
  MF_CHECK(mapping.ok());
  auto estimate = EstimateMemory(config, *mapping, 0);
  MF_CHECK(estimate.ok()) << estimate.status();
  m.estimate = *estimate;
  return m;
}

TEST(ActivationPolicyTest, MeasuredPeakMatchesThePlanForEveryPolicy) {
  const std::vector<std::pair<const char*, std::vector<std::string>>> policies = {
      {"keep", {}},
      {"selective", {"memory.activation_policy=recompute", "memory.recompute=selective"}},
      {"full", {"memory.activation_policy=recompute", "memory.recompute=full"}},
      {"swap 0.5", {"memory.activation_policy=swap", "memory.swap_fraction=0.5"}},
      {"swap 1", {"memory.activation_policy=swap", "memory.swap_fraction=1"}}};
  std::map<std::string, Measured> measured;
  for (const auto& [name, policy] : policies) {
    const Measured m = Measure(policy);
    measured[name] = m;
    std::printf("%-10s measured device %9lld host %9lld | plan device %9lld host %9lld\n", name,
                static_cast<long long>(m.device_peak), static_cast<long long>(m.host_peak),
                static_cast<long long>(m.estimate.activation_bytes),
                static_cast<long long>(m.estimate.activation_host_bytes));
    EXPECT_NEAR(static_cast<double>(m.device_peak),
                static_cast<double>(m.estimate.activation_bytes),
                0.1 * static_cast<double>(m.estimate.activation_bytes))
        << name << ": measured device peak against the plan";
    EXPECT_NEAR(static_cast<double>(m.host_peak),
                static_cast<double>(m.estimate.activation_host_bytes),
                0.1 * static_cast<double>(m.estimate.activation_host_bytes) + 1)
        << name << ": measured host arena peak against the plan";
  }
  EXPECT_GE(measured["keep"].device_peak, 3 * measured["full"].device_peak);
  EXPECT_GE(measured["keep"].device_peak, 2 * measured["swap 1"].device_peak);
  EXPECT_LT(measured["selective"].device_peak, measured["keep"].device_peak);
}

}  // namespace
}  // namespace moefold::train
