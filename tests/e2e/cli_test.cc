// End to end through the moefold binary: the quick start's loss falls on the built-in corpus, the
// metrics file has every documented key, and bad input ends with a message naming the problem.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/run_command.h"

namespace {

using Result = moefold::testing::CommandResult;
using moefold::testing::MpirunPrefix;
using moefold::testing::ReadLines;
using moefold::testing::RunCommand;

Result RunMoefold(const std::string& args) {
  return RunCommand(std::string(MOEFOLD_BINARY) + " " + args);
}

Result RunMpi(int ranks, const std::string& args, const std::string& env = "") {
  return RunCommand(env + " " + MpirunPrefix(ranks) + MOEFOLD_BINARY + " " + args);
}

double JsonNumber(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\": ");
  if (at == std::string::npos) return NAN;
  return std::stod(line.substr(at + key.size() + 4));
}

// The text of a flat JSON object field ({"dp": 0.1, ...}), for JsonNumber.
std::string JsonObject(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\": {");
  if (at == std::string::npos) return "";
  const size_t end = line.find('}', at);
  return line.substr(at, end - at + 1);
}

TEST(CliTest, QuickStartLossFallsClearlyOnTheBuiltinCorpus) {
  const std::string run_dir = "build/test-runs/quickstart";
  std::filesystem::remove_all(run_dir);
  const Result r = RunMoefold("train --config configs/tiny_moe.yaml --set train.steps=" +
                       std::to_string(QUICKSTART_TEST_STEPS) +
                       " --set data.cache_dir=build/test-data --run-dir " + run_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("moefold summary"), std::string::npos) << r.output;
  const auto lines = ReadLines(run_dir + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), static_cast<size_t>(QUICKSTART_TEST_STEPS));
  for (const char* key : {"step", "loss", "lm_loss", "aux_loss", "grad_norm", "lr", "tokens",
                          "tokens_per_s", "step_time_s", "data_s", "model_s", "update_s",
                          "expert_load_max_over_mean", "expert_tokens", "tokens_dropped",
                          "dispatch_bytes", "host_peak_bytes", "device_peak_bytes", "comm_s",
                          "comm_exposed_s", "skipped"}) {
    EXPECT_NE(lines[0].find(std::string("\"") + key + "\""), std::string::npos) << key;
  }
  const double first = JsonNumber(lines.front(), "lm_loss");
  double last = 0;
  for (size_t i = lines.size() - 5; i < lines.size(); ++i) last += JsonNumber(lines[i], "lm_loss") / 5;
  EXPECT_GT(first, 5.0) << "an untrained byte model starts near ln 257 = 5.55";
  EXPECT_LT(last, 3.0) << "mean lm_loss of the last 5 steps";
  EXPECT_GT(JsonNumber(lines.back(), "aux_loss"), 0.0);
}

TEST(CliTest, DataParallelRunUnderMpirunLogsOnRankZero) {
  const std::string run_dir = "build/test-runs/dp2";
  std::filesystem::remove_all(run_dir);
  const Result r = RunMpi(2, "train --config configs/tiny_moe.yaml --set train.steps=3 "
                             "--set optimizer.warmup_steps=1 --set parallel.zero1=true "
                             "--set data.cache_dir=build/test-data --run-dir " + run_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 rank(s): dp 2 (ZeRO-1)"), std::string::npos) << r.output;
  // One summary: only rank 0 logs.
  const size_t first = r.output.find("moefold summary");
  ASSERT_NE(first, std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("moefold summary", first + 1), std::string::npos) << r.output;
  EXPECT_EQ(ReadLines(run_dir + "/metrics.jsonl").size(), 3u);
}

TEST(CliTest, DataParallelBucketsOverlapBackwardAndTheBackendIsPrinted) {
  // DP 4 (EDP 4 for the experts) with small buckets: each bucket is reduced while backward goes on,
  // progressed at every layer boundary, so per group kind the time the host waited for gradient
  // buckets (exposed) is below the time they were in flight.
  const std::string run_dir = "build/test-runs/dp4-overlap";
  std::filesystem::remove_all(run_dir);
  const Result r = RunMpi(4, "train --config configs/tiny_moe.yaml --set train.steps=4 "
                             "--set optimizer.warmup_steps=1 --set train.micro_batch_size=1 "
                             "--set parallel.grad_bucket_elements=65536 "
                             "--set data.cache_dir=build/test-data --run-dir " + run_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("communicators: dp 4: MPI, dp-cp 4: MPI"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("world 4: MPI (CPU tensors)"), std::string::npos) << r.output;
  const auto lines = ReadLines(run_dir + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  for (const char* kind : {"dp-cp", "edp"}) {
    double total = 0, exposed = 0;
    for (const std::string& line : lines) {
      total += JsonNumber(JsonObject(line, "comm_s"), kind);
      exposed += JsonNumber(JsonObject(line, "comm_exposed_s"), kind);
    }
    std::printf("%s gradient buckets over 4 steps: %.4f s in flight, %.4f s exposed\n", kind,
                total, exposed);
    EXPECT_GT(total, 0) << kind << "\n" << lines[0];
    EXPECT_GE(exposed, 0) << kind << "\n" << lines[0];
    EXPECT_LT(exposed, total) << kind << "\n" << lines[0];
  }
}

TEST(CliTest, TensorAndContextParallelRunUnderMpirun) {
  const std::string run_dir = "build/test-runs/tp2cp2";
  std::filesystem::remove_all(run_dir);
  const Result r = RunMpi(4, "train --config configs/tiny_moe.yaml --set train.steps=2 "
                             "--set optimizer.warmup_steps=1 --set parallel.tp=2 "
                             "--set parallel.sequence_parallel=true --set parallel.cp=2 "
                             "--set data.cache_dir=build/test-data --run-dir " + run_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("4 rank(s): tp 2 (SP) × cp 2"), std::string::npos) << r.output;
  EXPECT_EQ(ReadLines(run_dir + "/metrics.jsonl").size(), 2u);
}

TEST(CliTest, ExpertParallelCapacityRunReportsDropsAndDispatchBytes) {
  const std::string run_dir = "build/test-runs/ep2";
  std::filesystem::remove_all(run_dir);
  const Result r = RunMpi(2, "train --config configs/tiny_moe.yaml --set train.steps=2 "
                             "--set optimizer.warmup_steps=1 --set parallel.ep=2 "
                             "--set model.moe.capacity_factor=0.5 "
                             "--set data.cache_dir=build/test-data --run-dir " + run_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 rank(s): dp 2, ep 2"), std::string::npos) << r.output;
  const auto lines = ReadLines(run_dir + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_GT(JsonNumber(lines[0], "tokens_dropped"), 0) << lines[0];
  EXPECT_GT(JsonNumber(lines[0], "dispatch_bytes"), 0) << lines[0];
}

TEST(CliTest, PipelineRunUnderMpirun) {
  const std::string run_dir = "build/test-runs/pp2";
  std::filesystem::remove_all(run_dir);
  const Result r = RunMpi(4, "train --config configs/tiny_moe.yaml --set train.steps=2 "
                             "--set optimizer.warmup_steps=1 --set parallel.pp=2 "
                             "--set parallel.virtual_stages=2 --set parallel.ep=2 "
                             "--set train.micro_batch_size=2 "
                             "--set data.cache_dir=build/test-data --run-dir " + run_dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("4 rank(s): dp 2 × pp 2 (interleaved, 2 virtual stages), ep 2"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(ReadLines(run_dir + "/metrics.jsonl").size(), 2u);
}

TEST(CliTest, AFailedRankEndsTheJobWithItsRankAndANonZeroExit) {
  const Result r = RunMpi(2, "train --config configs/tiny_moe.yaml --set train.steps=5 "
                             "--set optimizer.warmup_steps=1 --set data.cache_dir=build/test-data "
                             "--run-dir build/test-runs/fail",
                          "MOEFOLD_INJECT_FAILURE=1:2");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank 1] moefold train: injected failure at step 2"), std::string::npos)
      << r.output;
}

TEST(CliTest, PlanPrintsBothMeshesAndJson) {
  Result r = RunMoefold("plan --config configs/tiny_moe.yaml --world 16 --rank 5 "
                        "--set parallel.tp=2 --set parallel.cp=2 --set parallel.pp=2 "
                        "--set parallel.ep=4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("attention mesh: tp 2 × cp 2 × dp 2 × pp 2"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("MoE mesh:       etp 1 × ep 4 × edp 2 × pp 2"), std::string::npos);
  EXPECT_NE(r.output.find("[4,5,6,7]"), std::string::npos) << r.output;  // rank 5's EP group
  EXPECT_NE(r.output.find("memory per rank (pipeline stage 0, estimate)"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("in flight (1f1b)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pipeline bubble fraction: 0.500"), std::string::npos) << r.output;
  r = RunMoefold("plan --config configs/tiny_moe.yaml --world 4 --json --set parallel.ep=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"ep\": [[0, 1], [2, 3]]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"memory\": {\"stage\": 0"), std::string::npos) << r.output;
  r = RunMoefold("plan --config configs/tiny_moe.yaml --world 12 --set parallel.tp=8");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("world 12 is not divisible by tp 8"), std::string::npos) << r.output;
}

TEST(CliTest, PlanSuggestsAnActivationPolicyForAMemoryBudget) {
  // Keep needs 0.467 GiB here, selective 0.264 GiB.
  Result r = RunMoefold("plan --config configs/tiny_moe.yaml --world 1 --memory-budget 0.3 "
                        "--set train.seq_len=2048");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("policy keep (keep saves"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("suggested for --memory-budget 0.3 GiB: memory.activation_policy="
                          "recompute memory.recompute=selective"),
            std::string::npos)
      << r.output;
  r = RunMoefold("plan --config configs/tiny_moe.yaml --world 1 --memory-budget 0.0001");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("no activation policy fits"), std::string::npos) << r.output;
  r = RunMoefold("plan --config configs/tiny_moe.yaml --world 1 --set "
                 "memory.activation_policy=swap --set memory.swap_fraction=1 --set "
                 "memory.host_budget_gb=0.00001");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("memory.host_budget_gb = 1e-05 GiB is less than"), std::string::npos)
      << r.output;
}

TEST(CliTest, PlanPredictsAndSearches) {
  Result r = RunMoefold("plan --config configs/models/mixtral_8x22b.yaml --world 128 --predict");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* part : {"prediction on h100_sxm_ib400: 128 GPUs on 16 nodes",
                           "model TFLOP/s per GPU", "expert_gemm", "dispatch", "bubble"}) {
    EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
  }
  r = RunMoefold("plan --config configs/tiny_moe.yaml --world 2 --predict --json "
                 "--cluster h800_ib400 --set parallel.ep=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"cluster\": \"h800_ib400\""), std::string::npos) << r.output;
  r = RunMoefold("plan --config configs/tiny_moe.yaml --world 8 --search --top 3 "
                 "--micro-batch-sizes 1,2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(" 3. tp"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(" 4. tp"), std::string::npos) << r.output;
  // Bad input: an unknown cluster names the known ones; a layout that does not divide gives the
  // arithmetic; a model that fits on no layout names the smallest need.
  r = RunMoefold("plan --config configs/tiny_moe.yaml --world 4 --predict --cluster tpu_v9");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown cluster 'tpu_v9'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("h100_sxm_ib400"), std::string::npos) << r.output;
  r = RunMoefold("plan --config configs/models/mixtral_8x22b.yaml --world 100 --predict");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("world 100 % (tp 2 × cp 1 × pp 8 = 16) = 4"), std::string::npos)
      << r.output;
  r = RunMoefold("plan --config configs/models/qwen3_235b_a22b.yaml --world 8 --search "
                 "--micro-batch-sizes 1 --set train.global_batch_size=8");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("fits in memory; the smallest:"), std::string::npos) << r.output;
}

TEST(CliTest, HelpListsTheCommands) {
  const Result r = RunMoefold("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* command : {"train", "plan", "prep-data"}) {
    EXPECT_NE(r.output.find(command), std::string::npos) << command;
  }
  EXPECT_EQ(RunMoefold("train --help").exit_code, 0);
  EXPECT_EQ(RunMoefold("prep-data --help").exit_code, 0);
}

TEST(CliTest, BadInputNamesTheProblem) {
  Result r = RunMoefold("train --config configs/does_not_exist.yaml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("does_not_exist.yaml"), std::string::npos) << r.output;

  r = RunMoefold("train --config configs/tiny_moe.yaml --set model.hiden_size=4");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("hiden_size"), std::string::npos) << r.output;

  r = RunMoefold("train --config configs/tiny_moe.yaml --set model.num_heads=3");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("num_heads"), std::string::npos) << r.output;

  // The host memory a swap fraction needs, against its budget (a check of the train library that
  // config::Validate runs).
  r = RunMoefold("train --config configs/tiny_moe.yaml --set memory.activation_policy=swap "
                 "--set memory.swap_fraction=0.8 --set memory.host_budget_gb=0.00001");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("- memory.host_budget_gb = 1e-05 GiB is less than memory.swap_fraction "
                          "α = 0.8 needs on rank 0"),
            std::string::npos)
      << r.output;

  r = RunMoefold("train --config configs/tiny_moe.yaml --bogus 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--bogus"), std::string::npos) << r.output;

  r = RunMoefold("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("frobnicate"), std::string::npos);
}

TEST(CliTest, PrepDataWritesADatasetAndRefusesAMissingInput) {
  const std::string dir = "build/test-runs/prep";
  std::filesystem::create_directories(dir);
  { std::ofstream(dir + "/in.txt") << "hello world\n\nsecond line\n"; }
  Result r = RunMoefold("prep-data --input " + dir + "/in.txt --output " + dir + "/out");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 documents"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/out.idx"));
  r = RunMoefold("prep-data --input " + dir + "/missing.txt --output " + dir + "/out2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("missing.txt"), std::string::npos) << r.output;
}

TEST(CliTest, ExportWritesAHuggingFaceDirectoryFromAShardedCheckpoint) {
  // Saved by two ranks (TP 2 with EP 2), exported on one: config.json and the weights appear; a
  // family that cannot represent the model is refused with the reason.
  const std::string dir = "build/test-runs/export";
  std::filesystem::remove_all(dir);
  const Result train =
      RunMpi(2, "train --config configs/tiny_moe.yaml --set train.steps=2 "
                "--set optimizer.warmup_steps=1 --set parallel.tp=2 --set parallel.ep=2 "
                "--set data.cache_dir=build/test-data --set checkpoint.dir=" + dir + "/ckpt "
                "--run-dir " + dir + "/run");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find("checkpoint       " + dir + "/ckpt/step-00000002"),
            std::string::npos) << train.output;
  const Result r = RunMoefold("export --checkpoint " + dir + "/ckpt --output " + dir +
                              "/hf --dtype bf16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir + "/hf/config.json"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/hf/model.safetensors"));
  const Result refused = RunMoefold("export --checkpoint " + dir + "/ckpt --output " + dir +
                                    "/hf-mixtral --family mixtral");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("every Mixtral layer is MoE"), std::string::npos)
      << refused.output;
}

}  // namespace
