// Evaluation (core/train/evaluator.h) on every layout: after two training steps, the validation
// and test losses of TP2×EP2×PP2 (with DP2 and folded experts, 8 ranks) and of PP2 interleaved (2
// ranks, with CP2) equal one rank's within 1e-5, and loss reweighting, which changes the
// training, does not change how the evaluation weighs samples (plain mean: equal to the
// unweighted run's evaluation at the same parameters).
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/data/hf_bpe_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

// The 4-layer tiny MoE on the built-in corpus cut 80/15/5 (train/valid/test), evaluating 2
// global batches.
std::vector<std::string> EvalModel(std::vector<std::string> extra = {}) {
  std::vector<std::string> o = {"model.num_layers=4", "model.moe.num_experts=8",
                                "data.split=80,15,5", "train.eval_every=2", "train.eval_iters=2",
                                "train.steps=4"};
  o.insert(o.end(), extra.begin(), extra.end());
  return o;
}

struct EvalRun {
  double valid_before = 0;  // at the initial parameters
  double valid = 0, valid_next = 0, test = 0;  // after two steps: batches [0, 2), [2, 4); test
};

EvalRun RunEval(const config::ExperimentConfig& config, const parallel::ProcessGroups* groups) {
  TrainerOptions options;
  options.groups = groups;
  options.write_metrics = false;
  options.print_progress = false;
  auto trainer = Trainer::Create(config, options);
  MF_CHECK(trainer.ok()) << trainer.status();
  EvalRun run;
  auto eval = [&](data::SplitKind split, int64_t first) {
    auto r = (*trainer)->Evaluate(split, first, 2);
    MF_CHECK(r.ok()) << r.status();
    MF_CHECK_EQ(r->samples, 2 * config.train().global_batch_size());
    return r->loss;
  };
  run.valid_before = eval(data::SplitKind::kValid, 0);
  for (int s = 0; s < 2; ++s) MF_CHECK((*trainer)->Step(s).ok());
  run.valid = eval(data::SplitKind::kValid, 0);
  run.valid_next = eval(data::SplitKind::kValid, 2);
  run.test = eval(data::SplitKind::kTest, 0);
  return run;
}

void ExpectSameEval(const EvalRun& got, const EvalRun& want, const char* label) {
  const std::pair<double, double> pairs[] = {{got.valid_before, want.valid_before},
                                             {got.valid, want.valid},
                                             {got.valid_next, want.valid_next},
                                             {got.test, want.test}};
  const char* names[] = {"validation loss before training", "validation loss", "next validation "
                         "batches' loss", "test loss"};
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::isfinite(pairs[i].first)) << label << " " << names[i];
    EXPECT_NEAR(pairs[i].first, pairs[i].second, 1e-5 * std::fabs(pairs[i].second))
        << label << " " << names[i];
  }
}

const EvalRun& OneRank(const std::vector<std::string>& model) {
  static std::map<std::vector<std::string>, EvalRun> cache;
  auto it = cache.find(model);
  if (it == cache.end()) it = cache.emplace(model, RunEval(EquivalenceConfig(model), nullptr)).first;
  return it->second;
}

void ExpectLayoutEval(int world, const std::vector<std::string>& layout,
                      const std::vector<std::string>& model, const char* label) {
  if (WorldSize() != world) GTEST_SKIP() << label << " runs on " << world << " ranks";
  std::vector<std::string> all = model;
  all.insert(all.end(), layout.begin(), layout.end());
  const config::ExperimentConfig config = EquivalenceConfig(all);
  auto groups = MakeGroups(config, nullptr);
  ExpectSameEval(RunEval(config, groups.get()), OneRank(model), label);
}

TEST(EvalEquivalence, OneRankIsSane) {
  const EvalRun& r = OneRank(EvalModel());
  // Near ln(257) = 5.55 at initialisation, lower after two steps; other batches, other values.
  EXPECT_NEAR(r.valid_before, std::log(257.0), 0.5);
  EXPECT_LT(r.valid, r.valid_before);
  EXPECT_NE(r.valid, r.valid_next);
  EXPECT_NE(r.valid, r.test);
}

TEST(EvalEquivalence, Tp2Ep2Pp2Dp2) {
  ExpectLayoutEval(8, {"parallel.tp=2", "parallel.ep=2", "parallel.pp=2"}, EvalModel(),
                   "TP2×EP2×PP2 (DP2)");
}

TEST(EvalEquivalence, Pp2InterleavedCp2) {
  ExpectLayoutEval(4, {"parallel.pp=2", "parallel.virtual_stages=2", "parallel.cp=2"},
                   EvalModel(), "PP2 interleaved × CP2");
}

TEST(EvalEquivalence, ReweightingDoesNotWeighTheEvaluation) {
  if (WorldSize() != 1) GTEST_SKIP() << "one rank";
  // Before any step both trainers hold the same parameters: the evaluations must agree although
  // the reweighted run would weigh these samples' losses unequally in training.
  const EvalRun& plain = OneRank(EvalModel());
  const EvalRun& reweighted = OneRank(EvalModel(kReweighting));
  EXPECT_EQ(reweighted.valid_before, plain.valid_before);
  // Training differs (reweighted gradients), so the later evaluations do too.
  EXPECT_NE(reweighted.valid, plain.valid);
}

// Run(): validation after steps 2 and 4 (eval_loss, eval_ppl on those steps' metrics lines), the
// first over validation batches [0, 2) after two steps (= OneRank's `valid`), and the test loss
// on the last line.
TEST(EvalRun, LogsValidationAndTestLosses) {
  if (WorldSize() != 1) GTEST_SKIP() << "one rank";
  const std::string dir = absl::StrCat(::testing::TempDir(), "/moefold_eval_run_", ::getpid());
  std::filesystem::remove_all(dir);
  TrainerOptions options;
  options.run_dir = dir;
  options.print_progress = false;
  auto trainer = Trainer::Create(EquivalenceConfig(EvalModel()), options);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto summary = (*trainer)->Run();
  ASSERT_TRUE(summary.ok()) << summary.status();
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 4u);
  for (int s : {0, 2}) EXPECT_FALSE(lines[s].contains("eval_loss")) << s;
  for (int s : {1, 3}) {
    ASSERT_TRUE(lines[s].contains("eval_loss")) << s;
    EXPECT_NEAR(lines[s]["eval_ppl"].get<double>(), std::exp(lines[s]["eval_loss"].get<double>()),
                1e-9 * lines[s]["eval_ppl"].get<double>());
  }
  EXPECT_EQ(lines[1]["eval_loss"].get<double>(), OneRank(EvalModel()).valid);
  EXPECT_NE(lines[3]["eval_loss"].get<double>(), lines[1]["eval_loss"].get<double>());
  ASSERT_TRUE(lines[3].contains("test_loss"));
  EXPECT_FALSE(lines[1].contains("test_loss"));
  ASSERT_TRUE(summary->eval_loss.has_value() && summary->test_loss.has_value());
  EXPECT_EQ(*summary->test_loss, lines[3]["test_loss"].get<double>());
  std::filesystem::remove_all(dir);
}

TEST(EvalRun, BadSettingsAreNamed) {
  if (WorldSize() != 1) GTEST_SKIP() << "one rank";
  TrainerOptions options;
  options.write_metrics = false;
  options.print_progress = false;
  // Evaluation without a validation share.
  auto t = Trainer::Create(EquivalenceConfig(EvalModel({"data.split=1"})), options);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("needs a validation share"));
  // A zero train share.
  t = Trainer::Create(EquivalenceConfig(EvalModel({"data.split=0,1,0"})), options);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("the train share is 0"));
  // A tokenizer whose vocabulary (300 ids) exceeds the model's 257.
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[data::ByteToUnicode(static_cast<unsigned char>(b))] = b;
  for (int i = 256; i < 300; ++i) vocab[absl::StrCat("<extra_", i, ">")] = i;
  vocab["<|endoftext|>"] = 256;
  const nlohmann::json tok = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}}}};
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/moefold_eval_tok_", ::getpid(), ".json");
  std::ofstream(path) << tok.dump();
  t = Trainer::Create(
      EquivalenceConfig(EvalModel({"data.tokenizer=hf", "data.tokenizer_path=" + path})),
      options);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("300 ids but model.vocab_size is 257"));
  std::ofstream(path) << "{ not json";
  t = Trainer::Create(
      EquivalenceConfig(EvalModel({"data.tokenizer=hf", "data.tokenizer_path=" + path})),
      options);
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), ::testing::HasSubstr("not valid JSON"));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace moefold::train
