// Validate(): every problem reported at once with its arithmetic, and each rule firing on its own.
#include "configs/validate.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "configs/config_defaults.h"
#include "configs/config_loader.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::config {
namespace {

// A small MoE config that is valid for world 1, 2, 4 and 8.
ExperimentConfig MoeConfig(const std::vector<std::string>& overrides) {
  ExperimentConfig c = DefaultConfig();
  for (const char* o : {"model.moe.num_experts=8", "model.moe.expert_ffn_hidden_size=64",
                        "train.global_batch_size=16"}) {
    EXPECT_OK(ApplyOverride(&c, o));
  }
  for (const std::string& o : overrides) EXPECT_OK(ApplyOverride(&c, o));
  return c;
}

std::vector<std::string> Lines(const absl::Status& status) {
  return absl::StrSplit(std::string(status.message()), '\n');
}

TEST(ValidateTest, ReportsEveryProblemWithArithmetic) {
  const ExperimentConfig c =
      MoeConfig({"model.hidden_size=130", "model.num_heads=4", "parallel.tp=2", "parallel.dp=2",
                 "parallel.ep=3", "model.moe.score_function=softmx"});
  const absl::Status s = Validate(c, 8);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  const std::string m(s.message());
  for (const char* expected : {
           "- model.hidden_size 130 % model.num_heads 4 = 2",
           "- world 8 != tp 2 × cp 1 × dp 2 × pp 1 = 4",
           "- world 8 % (etp 1 × ep 3 × pp 1 = 3) = 2",
           "- model.moe.num_experts 8 % parallel.ep 3 = 2",
           "- model.moe.score_function = \"softmx\" is not one of: softmax, softmax_pre, sigmoid",
       }) {
    EXPECT_NE(m.find(expected), std::string::npos) << "missing: " << expected << "\nin:\n" << m;
  }
  EXPECT_EQ(Lines(s).size(), 5u) << m;
}

TEST(ValidateTest, ValidLayouts) {
  EXPECT_OK(Validate(MoeConfig({}), 1));
  EXPECT_OK(Validate(MoeConfig({"parallel.ep=8"}), 8));                   // dp 8, ep 8, edp 1
  EXPECT_OK(Validate(MoeConfig({"parallel.tp=2", "parallel.ep=4"}), 8));  // dp 4, edp 2
  EXPECT_OK(Validate(MoeConfig({"parallel.pp=2", "parallel.cp=2", "parallel.virtual_stages=2",
                                "train.global_batch_size=4"}),
                     4));
}

TEST(ValidateTest, StageLayerCounts) {
  // MoeConfig has 4 layers.
  EXPECT_EQ(*StageLayerCounts(MoeConfig({"parallel.pp=2"})), (std::vector<int>{2, 2}));
  EXPECT_EQ(*StageLayerCounts(MoeConfig({"parallel.pp=2", "parallel.virtual_stages=2"})),
            (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(*StageLayerCounts(MoeConfig({"parallel.pp=2", "parallel.first_stage_layers=1"})),
            (std::vector<int>{1, 3}));
  EXPECT_EQ(*StageLayerCounts(MoeConfig({"model.num_layers=8", "parallel.pp=4",
                                         "parallel.first_stage_layers=1",
                                         "parallel.last_stage_layers=1"})),
            (std::vector<int>{1, 3, 3, 1}));
  EXPECT_EQ(*StageLayerCounts(MoeConfig({})), (std::vector<int>{4}));
}

TEST(ValidateTest, DerivedSizes) {
  ExperimentConfig c =
      MoeConfig({"parallel.tp=2", "parallel.cp=2", "parallel.pp=2", "parallel.ep=4"});
  EXPECT_EQ(DerivedDp(c, 16), 2);
  EXPECT_EQ(DerivedEdp(c, 16), 2);
  EXPECT_EQ(DerivedDp(c, 12), 0);  // 12 % 8 != 0
  EXPECT_EQ(DerivedEdp(c, 12), 0);
  ASSERT_OK(ApplyOverride(&c, "parallel.dp=3"));
  EXPECT_EQ(DerivedDp(c, 16), 3);  // explicit, even when it does not fit (Validate says so)
}

TEST(ValidateTest, ParseTraceSteps) {
  EXPECT_FALSE(ParseTraceSteps("")->has_value());
  const std::optional<StepRange> range = *ParseTraceSteps("3-7");
  ASSERT_TRUE(range.has_value());
  EXPECT_EQ(range->first, 3);
  EXPECT_EQ(range->last, 7);
  EXPECT_EQ(ParseTraceSteps("5-5").value()->last, 5);
  for (const char* bad : {"5", "5-", "-5", "a-b", "1-2-3", "2 - 3", "+1-2", "3-2"}) {
    EXPECT_EQ(ParseTraceSteps(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_OK(Validate(
      MoeConfig({"train.steps=10", "optimizer.warmup_steps=1", "logging.trace_steps=8-20"}), 1));
}

struct RuleCase {
  std::vector<std::string> overrides;
  int world;
  std::string expected;
};

// A per-kind activation policy names a saved tensor kind of the activation store.
TEST(ValidateTest, UnknownSavedTensorKindIsRefused) {
  ExperimentConfig c = MoeConfig({});
  (*c.mutable_memory()->mutable_tensor_policy())["qkv"] = "swap";
  (*c.mutable_memory()->mutable_tensor_policy())["router"] = "evict";
  (*c.mutable_memory()->mutable_tensor_policy())["layer_input"] = "recompute";
  const std::string m(Validate(c, 1).message());
  EXPECT_NE(m.find("memory.tensor_policy has unknown tensor kind \"qkv\" (known: layer_input, "
                   "norm_output"), std::string::npos) << m;
  EXPECT_NE(m.find("memory.tensor_policy.router = \"evict\" is not one of: keep, recompute, swap"),
            std::string::npos) << m;
  EXPECT_NE(m.find("memory.tensor_policy.layer_input must be keep"), std::string::npos) << m;
}

class ValidateRuleTest : public ::testing::TestWithParam<RuleCase> {};

TEST_P(ValidateRuleTest, FiresWithArithmetic) {
  const RuleCase& rule = GetParam();
  const absl::Status s = Validate(MoeConfig(rule.overrides), rule.world);
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << rule.expected;
  EXPECT_NE(std::string(s.message()).find(rule.expected), std::string::npos)
      << "expected: " << rule.expected << "\ngot:\n"
      << s.message();
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ValidateRuleTest,
    ::testing::Values(
        RuleCase{{"model.hidden_size=0"}, 1, "model.hidden_size = 0 must be > 0"},
        RuleCase{{"model.num_layers=-1"}, 1, "model.num_layers = -1 must be > 0"},
        RuleCase{{"train.steps=0"}, 1, "train.steps = 0 must be > 0"},
        RuleCase{{"train.steps=10", "optimizer.warmup_steps=1", "logging.profile_steps=2,10"},
                 1,
                 "logging.profile_steps: step 10 is not in [0, train.steps 10)"},
        RuleCase{{"logging.trace_steps=3"},
                 1,
                 "logging.trace_steps = \"3\" is not START-END (0-based steps, inclusive"},
        RuleCase{{"logging.trace_steps=1-x"}, 1, "logging.trace_steps = \"1-x\" is not START-END"},
        RuleCase{{"logging.trace_steps=-1-2"}, 1, "logging.trace_steps = \"-1-2\" is not"},
        RuleCase{{"logging.trace_steps=4-2"}, 1, "logging.trace_steps = \"4-2\": START 4 > END 2"},
        RuleCase{{"train.steps=10", "optimizer.warmup_steps=1", "logging.trace_steps=10-12"},
                 1,
                 "logging.trace_steps: the first traced step 10 is not in [0, train.steps 10)"},
        RuleCase{{"train.micro_batch_size=0"}, 1, "train.micro_batch_size = 0 must be > 0"},
        RuleCase{{"model.num_heads=6", "model.num_kv_heads=4", "model.hidden_size=384"},
                 1,
                 "model.num_heads 6 % model.num_kv_heads 4 = 2"},
        RuleCase{{"model.hidden_size=132"},
                 1,
                 "head_dim = hidden_size 132 / num_heads 4 = 33 is odd: RoPE"},
        RuleCase{{"model.head_dim=33"}, 1, "model.head_dim 33 is odd"},
        RuleCase{{"model.moe.top_k=9"}, 1, "model.moe.top_k 9 > model.moe.num_experts 8"},
        RuleCase{{"model.moe.expert_ffn_hidden_size=0"},
                 1,
                 "model.moe.expert_ffn_hidden_size = 0 must be > 0: model.moe.num_experts 8 makes "
                 "4 layer(s) MoE"},
        RuleCase{{"train.global_batch_size=10", "train.micro_batch_size=2"},
                 2,
                 "train.global_batch_size 10 % (micro_batch_size 2 × dp 2 = 4) = 2"},
        RuleCase{{"parallel.tp=4"}, 6, "world 6 % (tp 4 × cp 1 × pp 1 = 4) = 2"},
        RuleCase{{"parallel.etp=8", "model.moe.expert_ffn_hidden_size=100"},
                 8,
                 "model.moe.expert_ffn_hidden_size 100 % parallel.etp 8 = 4"},
        RuleCase{{"parallel.tp=8", "model.num_kv_heads=2", "train.global_batch_size=8"},
                 8,
                 "model.num_heads 4 % parallel.tp 8 = 4"},
        RuleCase{{"parallel.tp=4", "model.num_kv_heads=2"},
                 4,
                 "model.num_kv_heads 2 % parallel.tp 4 = 2: each TP rank holds whole KV heads"},
        RuleCase{{"parallel.cp=2", "train.seq_len=250"},
                 2,
                 "train.seq_len 250 % (2 × parallel.cp) 4 = 2"},
        RuleCase{{"parallel.tp=4", "parallel.cp=2", "train.seq_len=20"},
                 8,
                 "train.seq_len / cp = 10 10 % parallel.tp 4 = 2"},
        RuleCase{{"parallel.tp=4", "parallel.sequence_parallel=true", "train.seq_len=18",
                  "model.num_kv_heads=4"},
                 4,
                 "train.seq_len / cp = 18 18 % parallel.tp 4 = 2: sequence parallelism splits"},
        RuleCase{{"parallel.tp=4", "train.seq_len=18", "model.num_kv_heads=4"},
                 4,
                 "18 % parallel.tp 4 = 2: without sequence parallelism each TP rank routes"},
        RuleCase{{"parallel.tp=2", "model.ffn_hidden_size=501", "model.moe.first_dense_layers=1"},
                 2,
                 "model.ffn_hidden_size 501 % parallel.tp 2 = 1: the dense FFN is split"},
        RuleCase{{"model.moe.drop_policy=random"}, 1,
                 "model.moe.drop_policy = \"random\" is not one of: probs, position"},
        RuleCase{{"model.moe.pad_to_capacity=true"}, 1,
                 "model.moe.pad_to_capacity needs model.moe.capacity_factor > 0"},
        RuleCase{{"parallel.ep=3", "model.moe.num_experts=8"}, 3,
                 "model.moe.num_experts 8 % parallel.ep 3 = 2: each EP rank owns"},
        RuleCase{{"parallel.pp=3"}, 3, "model.num_layers 4: 4 layers do not split evenly over 3 of pp 3 × "
                 "virtual_stages 1 = 3 stages (4 % 3 = 1)"},
        RuleCase{{"parallel.pp=2", "parallel.first_stage_layers=3", "parallel.last_stage_layers=3"},
                 2,
                 "model.num_layers 4 (after first_stage_layers 3 and last_stage_layers 3): -2 "
                 "layers do not split evenly over 0 of pp 2"},
        RuleCase{{"parallel.schedule=interleaved"}, 1,
                 "parallel.schedule \"interleaved\" needs parallel.virtual_stages > 1"},
        RuleCase{{"parallel.pp=2", "parallel.virtual_stages=2", "parallel.schedule=1f1b",
                  "train.global_batch_size=8"},
                 2,
                 "parallel.virtual_stages 2 needs parallel.schedule \"interleaved\""},
        RuleCase{{"parallel.pp=2", "parallel.virtual_stages=4"},
                 2,
                 "model.num_layers 4: 4 layers do not split evenly over 8 of pp 2 × "
                 "virtual_stages 4 = 8 stages (4 % 8 = 4)"},
        RuleCase{{"parallel.order=tp-cp-dp-pp"}, 1, "parallel.order \"tp-cp-dp-pp\" must name"},
        RuleCase{{"parallel.grad_bucket_elements=0"}, 2,
                 "parallel.grad_bucket_elements = 0 must be > 0"},
        RuleCase{{"model.moe.num_groups=3", "model.moe.group_topk=1"},
                 1,
                 "model.moe.num_experts 8 % model.moe.num_groups 3 = 2"},
        RuleCase{{"model.moe.num_groups=4", "model.moe.group_topk=5"},
                 1,
                 "model.moe.group_topk 5 must be in [1, num_groups 4]"},
        RuleCase{{"model.moe.num_groups=4", "model.moe.group_topk=2", "model.moe.top_k=3"},
                 1,
                 "model.moe.top_k 3 % model.moe.group_topk 2 = 1"},
        RuleCase{{"model.moe.num_groups=4", "model.moe.group_topk=1", "model.moe.top_k=4"},
                 1,
                 "model.moe.top_k 4 / group_topk 1 = 4 > experts per group 8 / 4 = 2"},
        RuleCase{{"model.moe.aux_loss_type=global"}, 1, "model.moe.aux_loss_type = \"global\""},
        RuleCase{{"optimizer.schedule=linear"}, 1, "optimizer.schedule = \"linear\""},
        RuleCase{{"precision.compute_dtype=fp16"}, 1, "precision.compute_dtype = \"fp16\""},
        RuleCase{{"precision.fp8_recipe=mxfp8"}, 1, "precision.fp8_recipe = \"mxfp8\""},
        RuleCase{{"memory.activation_policy=offload"}, 1, "memory.activation_policy = \"offload\""},
        RuleCase{{"memory.swap_fraction=1.5"},
                 1,
                 "memory.swap_fraction = 1.5 must be in [0, 1]: α is the share of each saved "
                 "tensor's token rows sent to the host (above 1 = more rows than the tensor has)"},
        RuleCase{{"memory.swap_fraction=-0.25"}, 1, "memory.swap_fraction = -0.25 must be in [0, 1]"},
        RuleCase{{"memory.recompute=most"}, 1, "memory.recompute = \"most\" is not one of"},
        RuleCase{{"memory.host_budget_gb=-1"}, 1, "memory.host_budget_gb = -1 must be >= 0"},
        RuleCase{{"compression.method=powersgd"}, 1, "compression.method = \"powersgd\""},
        RuleCase{{"compression.compressor=int4"}, 1, "compression.compressor = \"int4\""},
        RuleCase{{"reweighting.strategy=lower"}, 1, "reweighting.strategy = \"lower\""},
        RuleCase{{"reweighting.population=local"}, 1, "reweighting.population = \"local\""},
        RuleCase{{"train.device=tpu"}, 1, "train.device = \"tpu\""},
        RuleCase{{"logging.progress=sometimes"}, 1, "logging.progress = \"sometimes\""},
        RuleCase{{"data.tokenizer=gpt2"}, 1, "data.tokenizer = \"gpt2\""},
        RuleCase{{"reweighting.temperature=0"}, 1, "reweighting.temperature = 0 must be > 0"},
        RuleCase{{"optimizer.lr=1e-5"}, 1, "optimizer.lr 1e-05 < optimizer.min_lr 3e-05"},
        RuleCase{{"optimizer.min_lr=-1"}, 1, "optimizer.min_lr = -1 must be >= 0"},
        RuleCase{{"optimizer.warmup_steps=101"}, 1, "optimizer.warmup_steps 101 > train.steps 100"},
        RuleCase{
            {"compression.topk_fraction=0"}, 1, "compression.topk_fraction = 0 must be in (0, 1]"},
        RuleCase{{"compression.topk_fraction=1.5"},
                 1,
                 "compression.topk_fraction = 1.5 must be in (0, 1]"},
        RuleCase{
            {"model.moe.capacity_factor=-1"}, 1, "model.moe.capacity_factor = -1 must be >= 0"},
        RuleCase{{"model.vocab_size=256"}, 1, "model.vocab_size 256 < 257 needed by"},
        RuleCase{{"model.moe.expert_bias=true"},
                 1,
                 "model.moe.expert_bias needs score_function \"sigmoid\""},
        RuleCase{{"compression.rank_weights=0.5,0.5,0"},
                 2,
                 "compression.rank_weights has 3 entries != dp 2"},
        RuleCase{{"train.max_loss_spike=0.5"}, 1, "train.max_loss_spike = 0.5 must be 0 (off)"}));

}  // namespace
}  // namespace moefold::config
