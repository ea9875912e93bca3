// Config loading: defaults, YAML → JSON → protobuf, explicit zeros, errors that name the key, file
// and line, --set overrides, the YAML printer, and the quick-start file.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "configs/config_defaults.h"
#include "configs/config_loader.h"
#include "configs/validate.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::config {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

std::string MessageOf(const absl::Status& status) { return std::string(status.message()); }

// Calls `visit` with the path of every singular scalar field of `message`'s type, recursively.
void ForEachScalar(
    const Message& message, const std::string& prefix,
    const std::function<void(const Message&, const FieldDescriptor*, const std::string&)>& visit) {
  const auto* descriptor = message.GetDescriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    const std::string path = prefix.empty() ? field->name() : prefix + "." + field->name();
    if (field->is_repeated()) continue;
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      ForEachScalar(message.GetReflection()->GetMessage(message, field), path, visit);
    } else {
      visit(message, field, path);
    }
  }
}

TEST(DefaultConfigTest, EveryScalarFieldIsSetExplicitly) {
  const ExperimentConfig config = DefaultConfig();
  int scalars = 0;
  ForEachScalar(config, "", [&](const Message& m, const FieldDescriptor* f, const std::string& p) {
    ++scalars;
    EXPECT_TRUE(m.GetReflection()->HasField(m, f)) << p << " has no default";
  });
  EXPECT_GT(scalars, 80);  // guards against the walk silently visiting nothing
}

TEST(DefaultConfigTest, MegatronLikeValuesThatValidate) {
  const ExperimentConfig c = DefaultConfig();
  EXPECT_EQ(c.parallel().tp(), 1);
  EXPECT_EQ(c.parallel().dp(), 0);
  EXPECT_EQ(c.parallel().order(), "tp-cp-ep-dp-pp");
  EXPECT_FLOAT_EQ(c.optimizer().lr(), 3e-4f);
  EXPECT_FLOAT_EQ(c.optimizer().min_lr(), 3e-5f);
  EXPECT_FLOAT_EQ(c.optimizer().beta2(), 0.95f);
  EXPECT_EQ(c.optimizer().warmup_steps(), c.train().steps() / 10);
  EXPECT_EQ(c.model().moe().score_function(), "softmax");
  EXPECT_EQ(c.model().moe().aux_loss_type(), "batch");
  EXPECT_EQ(c.reweighting().population(), "global");
  EXPECT_EQ(c.train().seed(), 1234u);
  EXPECT_OK(Validate(c, 1));
  EXPECT_OK(Validate(c, 8));  // dp derived as 8; 8 sequences = 1 per rank
}

constexpr char kEverySection[] = R"(
name: every_section
model:
  vocab_size: 300
  hidden_size: 64
  num_layers: 2
  num_heads: 4
  num_kv_heads: 2
  head_dim: 32
  ffn_hidden_size: 96
  rope_theta: 500000.0
  norm_eps: 1.0e-6
  tie_embeddings: true
  init_std: .01
  moe:
    num_experts: 4
    top_k: 1
    expert_ffn_hidden_size: 32
    num_shared_experts: 1
    shared_expert_ffn_hidden_size: 64
    first_dense_layers: 1
    layer_freq: 1
    score_function: sigmoid
    normalize_topk: true
    scaling_factor: 2.5
    num_groups: 2
    group_topk: 1
    aux_loss_type: seq
    aux_loss_coeff: 1e-3
    z_loss_coeff: 1e-3
    capacity_factor: 1.25
    expert_bias: true
    expert_bias_rate: 0.002
parallel: {tp: 2, cp: 1, dp: 2, pp: 1, etp: 1, ep: 4, order: tp-cp-ep-dp-pp,
           sequence_parallel: true, virtual_stages: 1, zero1: true}
train:
  steps: 20
  global_batch_size: 16
  micro_batch_size: 2
  seq_len: 64
  seed: 18446744073709551615
  device: cuda
  max_loss_spike: 3
  eval_every: 5
optimizer:
  name: adamw
  lr: 1e-3
  min_lr: 0
  beta1: 0.8
  beta2: 0.99
  eps: 1e-6
  weight_decay: 0.01
  grad_clip: 0.5
  schedule: wsd
  warmup_steps: 2
  decay_fraction: 0.25
precision: {compute_dtype: bf16, fp8_recipe: delayed, amax_history: 32, fp8_grad_format: e4m3,
            pow2_scales: true}
memory: {activation_policy: swap, swap_fraction: 0.5}
compression:
  method: ef21
  compressor: topk
  topk_fraction: 0.05
  block_size: 64
  warm_start_steps: 3
  reanchor_every: 100
  rank_weights: [0.75, 0.25]
reweighting: {strategy: linupper, temperature: 0.4, warmup_steps: 10, warmup_temperature: 100,
              population: microbatch}
data: {path: /data/corpus_text_document, tokenizer: byte, seed: 7, cache_dir: /tmp/cache}
logging: {log_every: 5, progress: never}
checkpoint: {dir: ckpt, every: 10, resume: true}
)";

TEST(ParseConfigYamlTest, EverySectionParses) {
  auto c = ParseConfigYaml(kEverySection, "every.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->name(), "every_section");
  EXPECT_EQ(c->model().num_kv_heads(), 2);
  EXPECT_FLOAT_EQ(c->model().init_std(), 0.01f);
  EXPECT_FLOAT_EQ(c->model().rope_theta(), 500000.0f);
  EXPECT_EQ(c->model().moe().score_function(), "sigmoid");
  EXPECT_FLOAT_EQ(c->model().moe().capacity_factor(), 1.25f);
  EXPECT_TRUE(c->model().moe().expert_bias());
  EXPECT_EQ(c->parallel().ep(), 4);
  EXPECT_TRUE(c->parallel().sequence_parallel());
  EXPECT_EQ(c->train().seed(), 18446744073709551615ull);
  EXPECT_EQ(c->train().device(), "cuda");
  EXPECT_EQ(c->optimizer().schedule(), "wsd");
  EXPECT_EQ(c->precision().fp8_recipe(), "delayed");
  EXPECT_EQ(c->precision().amax_history(), 32);
  EXPECT_EQ(c->precision().fp8_grad_format(), "e4m3");
  EXPECT_TRUE(c->precision().pow2_scales());
  EXPECT_FLOAT_EQ(c->memory().swap_fraction(), 0.5f);
  ASSERT_EQ(c->compression().rank_weights_size(), 2);
  EXPECT_FLOAT_EQ(c->compression().rank_weights(1), 0.25f);
  EXPECT_EQ(c->reweighting().population(), "microbatch");
  EXPECT_EQ(c->data().path(), "/data/corpus_text_document");
  EXPECT_EQ(c->logging().progress(), "never");
  EXPECT_TRUE(c->checkpoint().resume());
  EXPECT_OK(Validate(*c, 4));  // tp 2 × dp 2; ep 4 × edp 1
}

TEST(ParseConfigYamlTest, ExplicitZeroAndFalseOverrideDefaults) {
  auto c = ParseConfigYaml(
      "optimizer: {grad_clip: 0, weight_decay: 0.0, beta1: 0}\n"
      "model: {rope_theta: 20000, tie_embeddings: false, moe: {aux_loss_coeff: 0, layer_freq: 0}}\n"
      "train: {seed: 0}\n",
      "zeros.yaml");
  ASSERT_OK(c);
  EXPECT_TRUE(c->optimizer().has_grad_clip());
  EXPECT_EQ(c->optimizer().grad_clip(), 0.0f);  // default 1.0
  EXPECT_EQ(c->optimizer().weight_decay(), 0.0f);
  EXPECT_EQ(c->optimizer().beta1(), 0.0f);
  EXPECT_EQ(c->model().moe().aux_loss_coeff(), 0.0f);
  EXPECT_EQ(c->model().moe().layer_freq(), 0);
  EXPECT_EQ(c->train().seed(), 0u);
  // Untouched fields keep their defaults.
  EXPECT_FLOAT_EQ(c->optimizer().lr(), 3e-4f);
  EXPECT_EQ(c->model().hidden_size(), DefaultConfig().model().hidden_size());
}

TEST(ParseConfigYamlTest, EmptyFileAndNullsGiveDefaults) {
  auto empty = ParseConfigYaml("", "empty.yaml");
  ASSERT_OK(empty);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*empty, DefaultConfig()));
  auto nulls = ParseConfigYaml("model:\n  hidden_size: ~\ntrain:\n", "nulls.yaml");
  ASSERT_OK(nulls);
  EXPECT_EQ(nulls->model().hidden_size(), DefaultConfig().model().hidden_size());
}

TEST(ParseConfigYamlTest, WarmupDefaultsToTenPercentOfSteps) {
  auto derived = ParseConfigYaml("train: {steps: 50}", "w.yaml");
  ASSERT_OK(derived);
  EXPECT_EQ(derived->optimizer().warmup_steps(), 5);
  auto explicit_zero =
      ParseConfigYaml("train: {steps: 50}\noptimizer: {warmup_steps: 0}", "w.yaml");
  ASSERT_OK(explicit_zero);
  EXPECT_EQ(explicit_zero->optimizer().warmup_steps(), 0);
}

TEST(ParseConfigYamlTest, ScalarForms) {
  auto c = ParseConfigYaml(
      "name: 2024\n"  // a string field keeps a number-looking value
      "model: {norm_eps: .5e-5, init_std: +0.03, rope_theta: 1e4, hidden_size: 0128}\n"
      "train: {max_loss_spike: .inf, device: \"cpu\"}\n"
      "parallel: {zero1: True}\n",
      "forms.yaml");
  ASSERT_OK(c);
  EXPECT_EQ(c->name(), "2024");
  EXPECT_FLOAT_EQ(c->model().norm_eps(), 0.5e-5f);
  EXPECT_FLOAT_EQ(c->model().init_std(), 0.03f);
  EXPECT_FLOAT_EQ(c->model().rope_theta(), 1e4f);
  EXPECT_EQ(c->model().hidden_size(), 128);
  EXPECT_TRUE(std::isinf(c->train().max_loss_spike()));
  EXPECT_TRUE(c->parallel().zero1());
}

TEST(ParseConfigYamlTest, UnknownKeyNamesKeyFileAndLine) {
  auto c = ParseConfigYaml("model:\n  hidden_size: 64\n  moe:\n    num_expert: 8\n", "exp.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string m = MessageOf(c.status());
  EXPECT_NE(m.find("exp.yaml:4:5"), std::string::npos) << m;
  EXPECT_NE(m.find("unknown key 'model.moe.num_expert'"), std::string::npos) << m;
  EXPECT_NE(m.find("did you mean 'num_experts'"), std::string::npos) << m;

  auto top = ParseConfigYaml("trian:\n  steps: 3\n", "exp.yaml");
  ASSERT_FALSE(top.ok());
  EXPECT_NE(MessageOf(top.status()).find("exp.yaml:1:1: unknown key 'trian' (did you mean 'train'"),
            std::string::npos)
      << top.status();
}

TEST(ParseConfigYamlTest, CamelCaseAndDuplicateKeysAreRefused) {
  auto camel = ParseConfigYaml("model:\n  hiddenSize: 64\n", "exp.yaml");
  ASSERT_FALSE(camel.ok());
  EXPECT_NE(MessageOf(camel.status()).find("write it as 'hidden_size'"), std::string::npos)
      << camel.status();
  auto dup = ParseConfigYaml("train:\n  steps: 3\n  steps: 4\n", "exp.yaml");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(MessageOf(dup.status()).find("exp.yaml:3:3: duplicate key 'train.steps'"),
            std::string::npos)
      << dup.status();
}

TEST(ParseConfigYamlTest, WrongTypeNamesKeyAndValue) {
  auto c = ParseConfigYaml("model:\n  hidden_size: big\n", "exp.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  std::string m = MessageOf(c.status());
  EXPECT_NE(m.find("exp.yaml:2:3: bad value for 'model.hidden_size'"), std::string::npos) << m;
  EXPECT_NE(m.find("big"), std::string::npos) << m;

  auto fractional = ParseConfigYaml("train: {steps: 2.5}", "exp.yaml");
  ASSERT_FALSE(fractional.ok());
  EXPECT_NE(MessageOf(fractional.status()).find("'train.steps'"), std::string::npos);

  auto section = ParseConfigYaml("model: 5\n", "exp.yaml");
  ASSERT_FALSE(section.ok());
  m = MessageOf(section.status());
  EXPECT_NE(m.find("'model'"), std::string::npos) << m;
  EXPECT_NE(m.find("section"), std::string::npos) << m;

  auto list = ParseConfigYaml("model: {hidden_size: [1, 2]}", "exp.yaml");
  ASSERT_FALSE(list.ok());
  EXPECT_NE(MessageOf(list.status()).find("exp.yaml:1:9: bad value for 'model.hidden_size'"),
            std::string::npos)
      << list.status();

  auto element = ParseConfigYaml("compression:\n  rank_weights: [1, x]\n", "exp.yaml");
  ASSERT_FALSE(element.ok());
  EXPECT_NE(MessageOf(element.status()).find("'compression.rank_weights[1]'"), std::string::npos)
      << element.status();
}

TEST(ParseConfigYamlTest, SyntaxErrorNamesFileAndLine) {
  auto c = ParseConfigYaml("model:\n  hidden_size: 64\n  num_layers: [1, 2\n", "broken.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string m = MessageOf(c.status());
  EXPECT_NE(m.find("broken.yaml:"), std::string::npos) << m;
  EXPECT_NE(m.find("YAML syntax error"), std::string::npos) << m;

  auto indent = ParseConfigYaml("model:\n  hidden_size: 64\n bad: 1\n", "indent.yaml");
  ASSERT_FALSE(indent.ok());
  EXPECT_NE(MessageOf(indent.status()).find("indent.yaml:3:"), std::string::npos)
      << indent.status();

  auto list = ParseConfigYaml("- a\n- b\n", "list.yaml");
  ASSERT_FALSE(list.ok());
  EXPECT_NE(MessageOf(list.status()).find("top level must be a mapping"), std::string::npos);
}

TEST(ApplyOverrideTest, SetsEveryKindOfField) {
  ExperimentConfig c = DefaultConfig();
  EXPECT_OK(ApplyOverride(&c, "train.steps=10"));
  EXPECT_OK(ApplyOverride(&c, "optimizer.lr=1e-3"));
  EXPECT_OK(ApplyOverride(&c, "train.device=cuda"));
  EXPECT_OK(ApplyOverride(&c, "parallel.zero1=true"));
  EXPECT_OK(ApplyOverride(&c, "model.moe.top_k = 4"));
  EXPECT_OK(ApplyOverride(&c, "train.seed=18446744073709551615"));
  EXPECT_OK(ApplyOverride(&c, "name='my run'"));
  EXPECT_OK(ApplyOverride(&c, "compression.rank_weights=0.5,0.25, 0.25"));
  EXPECT_EQ(c.train().steps(), 10);
  EXPECT_FLOAT_EQ(c.optimizer().lr(), 1e-3f);
  EXPECT_EQ(c.train().device(), "cuda");
  EXPECT_TRUE(c.parallel().zero1());
  EXPECT_EQ(c.model().moe().top_k(), 4);
  EXPECT_EQ(c.train().seed(), 18446744073709551615ull);
  EXPECT_EQ(c.name(), "my run");
  ASSERT_EQ(c.compression().rank_weights_size(), 3);
  EXPECT_FLOAT_EQ(c.compression().rank_weights(2), 0.25f);
  EXPECT_OK(ApplyOverride(&c, "compression.rank_weights="));
  EXPECT_EQ(c.compression().rank_weights_size(), 0);
  EXPECT_OK(ApplyOverride(&c, "parallel.zero1=false"));
  EXPECT_FALSE(c.parallel().zero1());
}

// A map's entry by key (memory.tensor_policy.KIND=POLICY): added, then replaced; the kind itself
// is checked by Validate, which names an unknown one.
TEST(ApplyOverrideTest, SetsAMapEntryByKey) {
  ExperimentConfig c = DefaultConfig();
  EXPECT_OK(ApplyOverride(&c, "memory.tensor_policy.router=swap"));
  EXPECT_OK(ApplyOverride(&c, "memory.tensor_policy.attention_output=recompute"));
  EXPECT_OK(ApplyOverride(&c, "memory.tensor_policy.router = keep"));
  ASSERT_EQ(c.memory().tensor_policy_size(), 2);
  EXPECT_EQ(c.memory().tensor_policy().at("router"), "keep");
  EXPECT_EQ(c.memory().tensor_policy().at("attention_output"), "recompute");
  EXPECT_OK(ApplyOverride(&c, "memory.tensor_policy.qkv=swap"));
  const absl::Status bad = Validate(c, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(MessageOf(bad).find("memory.tensor_policy has unknown tensor kind \"qkv\""),
            std::string::npos)
      << bad;
  for (const char* wrong : {"memory.tensor_policy=swap", "memory.tensor_policy.a.b=swap"}) {
    const absl::Status s = ApplyOverride(&c, wrong);
    ASSERT_FALSE(s.ok()) << wrong;
    EXPECT_NE(MessageOf(s).find("memory.tensor_policy is a map; set one entry "
                                "(memory.tensor_policy.KEY=value)"),
              std::string::npos)
        << s;
  }
}

TEST(ApplyOverrideTest, ErrorsNameThePath) {
  ExperimentConfig c = DefaultConfig();
  struct Case {
    const char* assignment;
    const char* expected;
  };
  for (const Case& k : {
           Case{"train.stpes=3", "unknown field 'stpes' in train (did you mean 'steps'?)"},
           Case{"modle.hidden_size=3", "unknown field 'modle' in the experiment"},
           Case{"train.steps=abc", "'abc' is not an int32 (train.steps)"},
           Case{"train.steps=3000000000", "is not an int32 (train.steps)"},
           Case{"train.seed=-1", "is not a uint64 (train.seed)"},
           Case{"optimizer.lr=fast", "'fast' is not a number (optimizer.lr)"},
           Case{"parallel.zero1=maybe", "is not a bool (true/false) (parallel.zero1)"},
           Case{"compression.rank_weights=1,x", "'x' is not a number (compression.rank_weights)"},
           Case{"model.moe=3", "model.moe is a section"},
           Case{"train.steps.x=3", "train.steps is a value, not a section"},
           Case{"train.steps", "expected key=value"},
       }) {
    const absl::Status s = ApplyOverride(&c, k.assignment);
    ASSERT_FALSE(s.ok()) << k.assignment;
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(MessageOf(s).find(k.expected), std::string::npos) << k.assignment << " → " << s;
    EXPECT_NE(MessageOf(s).find(k.assignment), std::string::npos) << s;
  }
  // Failed overrides leave the config as it was (no half-set list, no section created on the way).
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(c, DefaultConfig()));
}

class TempFile {
 public:
  explicit TempFile(const std::string& text)
      : path_(std::filesystem::temp_directory_path() /
              ("moefold_config_test_" + std::to_string(::getpid()) + ".yaml")) {
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

TEST(LoadConfigFileTest, OverridesCountAsExplicit) {
  TempFile file("train:\n  steps: 40\n  seq_len: 32\n");
  auto c =
      LoadConfigFile(file.path(), {"train.steps=200", "train.steps=100", "model.hidden_size=64"});
  ASSERT_OK(c);
  EXPECT_EQ(c->train().steps(), 100);  // later overrides win
  EXPECT_EQ(c->train().seq_len(), 32);
  EXPECT_EQ(c->model().hidden_size(), 64);
  EXPECT_EQ(c->optimizer().warmup_steps(), 10);  // 10% of the overridden steps
}

TEST(LoadConfigFileTest, ErrorsNameTheFile) {
  auto missing = LoadConfigFile("configs/no_such_file.yaml", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(MessageOf(missing.status()).find("configs/no_such_file.yaml"), std::string::npos);

  TempFile file("train:\n  step: 40\n");
  auto unknown = LoadConfigFile(file.path(), {});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(MessageOf(unknown.status()).find(file.path() + ":2:3: unknown key 'train.step'"),
            std::string::npos)
      << unknown.status();

  TempFile ok_file("train:\n  steps: 40\n");
  auto bad_override = LoadConfigFile(ok_file.path(), {"train.steps=many"});
  ASSERT_FALSE(bad_override.ok());
  EXPECT_NE(MessageOf(bad_override.status()).find("train.steps=many"), std::string::npos);
}

TEST(ConfigToYamlTest, RoundTrips) {
  ExperimentConfig c = DefaultConfig();
  ASSERT_OK(ApplyOverride(&c, "name=quote \" and \\ and: colon"));
  ASSERT_OK(ApplyOverride(&c, "train.seed=18446744073709551615"));
  ASSERT_OK(ApplyOverride(&c, "compression.rank_weights=0.1,0.2,0.7"));
  ASSERT_OK(ApplyOverride(&c, "model.norm_eps=1e-6"));
  ASSERT_OK(ApplyOverride(&c, "data.path=2024"));
  const std::string yaml = ConfigToYaml(c);
  EXPECT_NE(yaml.find("  lr: 0.0003\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("model:\n  vocab_size: 257\n"), std::string::npos) << yaml;
  auto back = ParseConfigYaml(yaml, "printed.yaml");
  ASSERT_OK(back);
  std::string diff;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(*back, c)) << diff << "\n" << yaml;
}

TEST(TinyMoeTest, LoadsAndValidates) {
  auto c = LoadConfigFile("configs/tiny_moe.yaml", {});
  ASSERT_OK(c);
  EXPECT_OK(Validate(*c, 1));
  const ModelConfig& m = c->model();
  EXPECT_EQ(m.vocab_size(), 257);
  EXPECT_EQ(m.moe().num_experts(), 8);
  EXPECT_EQ(CountMoeLayers(*c), 3);
  // Parameter count (untied embeddings, GQA attention, SwiGLU) must be 1-5 M.
  const int64_t h = m.hidden_size(), d = h / m.num_heads();
  int64_t params = 2 * int64_t{m.vocab_size()} * h + h;
  for (int l = 0; l < m.num_layers(); ++l) {
    params += h * d * (2 * m.num_heads() + 2 * m.num_kv_heads()) + 2 * h;
    params += l < m.moe().first_dense_layers()
                  ? 3 * h * m.ffn_hidden_size()
                  : m.moe().num_experts() * (3 * h * m.moe().expert_ffn_hidden_size() + h);
  }
  EXPECT_EQ(params, 2822528);
  EXPECT_GE(params, 1000000);
  EXPECT_LE(params, 5000000);
}

}  // namespace
}  // namespace moefold::config
