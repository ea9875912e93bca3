// The whole-step benchmark end to end on the CPU (a tiny model): one JSON line per micro-batch and
// routing mode, a best line per mode, MFU only when a peak is known, forced-balanced routing at
// imbalance 1, and a micro-batch that does not divide the batch reported as an error line.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/run_command.h"

namespace {

struct Result {
  int exit_code = -1;
  std::vector<std::string> lines;  // stdout only
  std::string errors;
};

// `launcher`: e.g. mpirun and its flags, run before the binary.
Result RunBench(const std::string& args, const std::string& launcher = "") {
  const std::string command = launcher + std::string(STEP_BENCH_BINARY) +
                              " --config configs/tiny_moe.yaml --set data.cache_dir=build/test-data"
                              " --set model.num_layers=2 --set model.hidden_size=64 "
                              "--set train.seq_len=32 --warmup 1 --steps 2 " +
                              args + " 2>/dev/null";
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[8192];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) {
    std::string line = buffer;
    if (!line.empty() && line.back() == '\n') line.pop_back();
    r.lines.push_back(line);
  }
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The value after "key": as text (up to the next comma or brace).
std::string Field(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\": ");
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size() + 4;
  const size_t end = line.find_first_of(",}", begin);
  return line.substr(begin, end - begin);
}

double Number(const std::string& line, const std::string& key) {
  const std::string v = Field(line, key);
  return v.empty() || v == "null" ? NAN : std::stod(v);
}

TEST(StepBenchTest, PrintsOneLinePerMicroBatchAndRoutingAndTheBest) {
  const Result r = RunBench("--micro-batches 4,8 --peak-tflops 0.5");
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.lines.size(), 6u);  // per mode: micro-batch 4, 8, best
  for (size_t i : {0u, 1u, 3u, 4u}) {
    const std::string& line = r.lines[i];
    EXPECT_EQ(Field(line, "bench"), "\"train_step\"") << line;
    EXPECT_EQ(Field(line, "device"), "\"cpu\"");
    EXPECT_EQ(Number(line, "micro_batch"), i % 3 == 0 ? 4 : 8);
    EXPECT_EQ(Number(line, "timed_steps"), 2);
    EXPECT_GT(Number(line, "tokens_per_s"), 0);
    EXPECT_NEAR(Number(line, "tokens_per_s") * Number(line, "step_s_median"),
                Number(line, "tokens_per_step"), 1e-3 * Number(line, "tokens_per_step"));
    EXPECT_NEAR(Number(line, "model_tflops"),
                Number(line, "flops_per_token") * Number(line, "tokens_per_s") / 1e12,
                1e-4 * Number(line, "model_tflops"));
    EXPECT_NEAR(Number(line, "mfu"), Number(line, "model_tflops") / 0.5,
                1e-4 * Number(line, "mfu"));
    EXPECT_GT(Number(line, "peak_memory_bytes"), 0);
    // The phases (medians of each) account for the step, which also spends a little between them.
    const double phases = Number(line, "data_s_median") + Number(line, "model_s_median") +
                          Number(line, "update_s_median");
    EXPECT_GT(Number(line, "model_s_median"), 0) << line;
    EXPECT_GT(Number(line, "update_s_median"), 0) << line;
    EXPECT_LE(phases, 1.1 * Number(line, "step_s_median")) << line;
    EXPECT_GE(phases, 0.5 * Number(line, "step_s_median")) << line;
    EXPECT_TRUE(std::isfinite(Number(line, "last_loss")));
  }
  EXPECT_EQ(Field(r.lines[0], "routing"), "\"balanced\"");
  EXPECT_EQ(Number(r.lines[0], "expert_imbalance_mean"), 1.0) << r.lines[0];
  EXPECT_EQ(Field(r.lines[3], "routing"), "\"real\"");
  EXPECT_GT(Number(r.lines[3], "expert_imbalance_mean"), 1.0) << r.lines[3];
  for (size_t i : {2u, 5u}) {
    EXPECT_EQ(Field(r.lines[i], "bench"), "\"train_step_best\"");
    const double best = Number(r.lines[i], "tokens_per_s");
    EXPECT_EQ(best, std::max(Number(r.lines[i - 2], "tokens_per_s"),
                             Number(r.lines[i - 1], "tokens_per_s")));
  }
}

TEST(StepBenchTest, MfuIsNullOnTheCpuAndABadMicroBatchIsAnErrorLine) {
  const Result r = RunBench("--micro-batches 3 --routing real");
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(r.lines.size(), 1u);
  EXPECT_NE(r.lines[0].find("\"error\": \"micro-batch size 3 does not divide the global batch 8"),
            std::string::npos)
      << r.lines[0];

  const Result ok = RunBench("--routing real");
  ASSERT_EQ(ok.exit_code, 0);
  ASSERT_EQ(ok.lines.size(), 2u);
  EXPECT_EQ(Field(ok.lines[0], "mfu"), "null");
  EXPECT_EQ(Field(ok.lines[0], "peak_tflops"), "null");
  EXPECT_EQ(Field(ok.lines[0], "grouped_gemm"), "\"auto\"");  // the default
}

TEST(StepBenchTest, UnderMpirunRankZeroPrintsTheCommunicationOfEachGroupKind) {
  const Result r = RunBench("--routing real",
                            moefold::testing::MpirunPrefix(2));
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.lines.size(), 2u);  // rank 0's train_step and train_step_best only
  const std::string& line = r.lines[0];
  EXPECT_EQ(Number(line, "ranks"), 2) << line;
  // dp 2: the gradient buckets reduce over "dp-cp" (and the experts over "edp").
  const size_t comm = line.find("\"comm_s_median\": {");
  const size_t exposed = line.find("\"comm_exposed_s_median\": {");
  ASSERT_NE(comm, std::string::npos) << line;
  ASSERT_NE(exposed, std::string::npos) << line;
  const double total_dp = Number(line.substr(comm), "dp-cp");
  const double exposed_dp = Number(line.substr(exposed), "dp-cp");
  EXPECT_GT(total_dp, 0) << line;
  EXPECT_LE(exposed_dp, total_dp) << line;

  const Result one = RunBench("--routing real");
  ASSERT_EQ(one.exit_code, 0);
  EXPECT_NE(one.lines[0].find("\"ranks\": 1, \"comm_s_median\": {}"), std::string::npos)
      << one.lines[0];
}

TEST(StepBenchTest, NamesTheExpertGemmBackend) {
  for (const std::string name : {"cublas_grouped", "batched"}) {
    const Result r = RunBench("--routing balanced --grouped-gemm " + name);
    ASSERT_EQ(r.exit_code, 0) << name;
    ASSERT_EQ(r.lines.size(), 2u) << name;
    for (const std::string& line : r.lines) {
      EXPECT_EQ(Field(line, "grouped_gemm"), "\"" + name + "\"") << line;
    }
  }
}

// --profile adds, after each run's line, one "op_profile" line per op family, one for the
// unattributed rest and one for the whole step; the families and the rest add up to the step.
TEST(StepBenchTest, ProfileAddsOpFamilyLinesThatSumToTheStep) {
  const Result r = RunBench("--routing real --profile-steps 2");
  ASSERT_EQ(r.exit_code, 0);
  double sum = 0, step = 0;
  int families = 0;
  for (const std::string& line : r.lines) {
    if (Field(line, "bench") != "\"op_profile\"") continue;
    EXPECT_EQ(Field(line, "routing"), "\"real\"") << line;
    if (Field(line, "family") == "\"step\"") {
      step = Number(line, "ms_per_step");
      EXPECT_GT(Number(line, "model_tflops"), 0) << line;
      continue;
    }
    EXPECT_EQ(Number(line, "profiled_steps"), 2) << line;
    EXPECT_GE(Number(line, "ms_per_step"), 0) << line;
    sum += Number(line, "ms_per_step");
    ++families;
    const std::string family = Field(line, "family");
    if (family == "\"attention\"" || family == "\"expert_gemm\"" || family == "\"router\"") {
      EXPECT_GT(Number(line, "ms_per_step"), 0) << line;
      EXPECT_GT(Number(line, "calls_per_step"), 0) << line;
    }
  }
  EXPECT_EQ(families, 13);  // 12 op families and the unattributed rest
  ASSERT_GT(step, 0);
  EXPECT_NEAR(sum, step, 1e-4 * step);  // the lines print 6 significant digits
}

TEST(StepBenchTest, BadArgumentsAreRefused) {
  EXPECT_EQ(RunBench("--routing sideways").exit_code, 2);
  EXPECT_EQ(RunBench("--steps 0").exit_code, 2);
  EXPECT_EQ(RunBench("--grouped-gemm fastest").exit_code, 2);
}

}  // namespace
