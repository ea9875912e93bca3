// Reliability through the `moefold` binary on two ranks of a tiny model, with the faults a long
// run meets: a rank stopped with SIGSTOP (the watchdog must end the job within
// train.hang_timeout_s + 10 s, naming the rank), a rank SIGKILLed in the middle of a step under
// `moefold launch` (restarted from the last checkpoint, final losses equal to an uninterrupted
// run), SIGTERM reaching one rank (every rank saves, exit code 75, the resumed run continues
// bit-identically), and a bit flipped in one rank's gradient with train.verify_every (detected,
// the rank named). Every run is compared against one uninterrupted reference run.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/train/exit_codes.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "tests/testing/run_command.h"
#include "tests/testing/testing.h"

namespace moefold::train {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using Result = moefold::testing::CommandResult;
using moefold::testing::JsonNumberText;
using moefold::testing::MpirunPrefix;
using moefold::testing::ReadLines;
using moefold::testing::RunCommand;

// The model and batch of the equivalence tests: a step takes a few milliseconds.
constexpr char kTinyRun[] =
    "train --config configs/tiny_moe.yaml --set model.hidden_size=32 --set model.num_layers=2 "
    "--set model.num_heads=8 --set model.num_kv_heads=4 --set model.head_dim=8 "
    "--set model.ffn_hidden_size=64 --set model.moe.num_experts=4 --set model.moe.top_k=2 "
    "--set model.moe.expert_ffn_hidden_size=32 --set model.moe.num_shared_experts=1 "
    "--set model.moe.first_dense_layers=1 --set train.seq_len=16 --set train.global_batch_size=8 "
    "--set train.micro_batch_size=2 --set optimizer.warmup_steps=2 "
    "--set data.cache_dir=build/test-data --set logging.progress=never";
// 12 steps with ZeRO-1 (both ranks' shards hold moments), a checkpoint every 3.
constexpr char kTwelveSteps[] =
    " --set train.steps=12 --set parallel.zero1=true --set checkpoint.every=3";

const std::string kRoot = "build/test-runs/reliability";

// `mpirun -np 2 moefold train` of the tiny model in `dir` (checkpoints in dir/ck, metrics in
// dir/run), as a command line.
std::string TrainCommand(const std::string& dir, const std::string& args) {
  return MpirunPrefix(2) + MOEFOLD_BINARY + " " + kTinyRun + " --set checkpoint.dir=" + dir +
         "/ck --run-dir " + dir + "/run " + args;
}

Result Shell(const std::string& command, const std::string& env = "") {
  return RunCommand(env + " " + command);
}

// metrics.jsonl by step; a step logged again after a restart counts with its later line.
std::map<int, std::string> MetricsByStep(const std::string& run_dir) {
  std::map<int, std::string> by_step;
  for (const std::string& line : ReadLines(run_dir + "/metrics.jsonl")) {
    by_step[std::stoi(JsonNumberText(line, "step"))] = line;
  }
  return by_step;
}

// Steps [first, last) of `run_dir` equal the reference's, bit for bit.
void ExpectStepsEqual(const std::string& run_dir, const std::map<int, std::string>& reference,
                      int first, int last) {
  const auto got = MetricsByStep(run_dir);
  for (int step = first; step < last; ++step) {
    ASSERT_TRUE(got.count(step)) << "step " << step << " missing in " << run_dir;
    ASSERT_TRUE(reference.count(step)) << step;
    for (const char* key : {"loss", "lm_loss", "aux_loss", "grad_norm", "lr"}) {
      EXPECT_EQ(JsonNumberText(got.at(step), key), JsonNumberText(reference.at(step), key))
          << key << " at step " << step << " in " << run_dir;
    }
  }
}

// A command running in the background, its output in a file.
class Background {
 public:
  Background(const std::string& command, const std::string& log) : log_(log) {
    pid_ = fork();
    if (pid_ == 0) {
      execl("/bin/sh", "sh", "-c", (command + " > " + log + " 2>&1").c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  // Waits up to `timeout_s`; the exit code, or -1 when it is still running (then killed).
  int Wait(double timeout_s) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  pid_t pid() const { return pid_; }
  std::string Output() const {
    std::ifstream in(log_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  ~Background() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

 private:
  pid_t pid_ = -1;
  std::string log_;
};

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
}

class ReliabilityFaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs::remove_all(kRoot);
    fs::create_directories(kRoot);
    reference_ = new Result(Shell(TrainCommand(kRoot + "/reference", kTwelveSteps)));
  }
  static void TearDownTestSuite() {
    delete reference_;
    reference_ = nullptr;
  }
  void SetUp() override { ASSERT_EQ(reference_->exit_code, 0) << reference_->output; }
  static std::map<int, std::string> Reference() {
    return MetricsByStep(kRoot + "/reference/run");
  }
  static Result* reference_;
};
Result* ReliabilityFaultTest::reference_ = nullptr;

// The pid of `rank` once its heartbeat (run_dir/flight/rankN.json) shows the armed step loop at
// step >= `step`; 0 when that does not happen within a minute.
int RankPidAtStep(const std::string& run_dir, int rank, int step) {
  for (int i = 0; i < 600; ++i) {
    const nlohmann::json beat =
        ReadJson(run_dir + "/flight/rank" + std::to_string(rank) + ".json");
    if (beat.is_object() && beat.value("armed", false) &&
        beat.value("position", nlohmann::json()).value("step", -1) >= step) {
      return beat.value("pid", 0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

TEST_F(ReliabilityFaultTest, ASigstoppedRankIsNamedAndTheJobEndsWithinTheBound) {
  const std::string dir = kRoot + "/sigstop";
  constexpr double kHangTimeout = 5;
  Background job(TrainCommand(dir, "--set train.steps=1000000 --set checkpoint.every=0 "
                                   "--set train.hang_timeout_s=5"),
                 kRoot + "/sigstop.log");
  // Rank 1's heartbeat names its process once the step loop runs (armed).
  const int pid = RankPidAtStep(dir + "/run", 1, 3);
  ASSERT_GT(pid, 0) << job.Output();
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  // The requirement: the job ends within hang_timeout_s + 10 s of the stop.
  const int code = job.Wait(kHangTimeout + 10);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  kill(pid, SIGKILL);  // should the job not have ended, the stopped rank must not linger
  const std::string output = job.Output();
  ASSERT_NE(code, -1) << "the job still ran " << took << " s after the stop\n" << output;
  std::printf("SIGSTOP of rank 1: the job ended after %.1f s (hang_timeout_s %.0f)\n", took,
              kHangTimeout);
  EXPECT_EQ(code, kExitHang) << output;
  EXPECT_THAT(output, HasSubstr("stuck: rank 1\n")) << output;
  EXPECT_THAT(output, HasSubstr("rank 1 [stuck]: no heartbeat for")) << output;
  // Every rank's position and its current or last operation.
  EXPECT_THAT(output, ::testing::ContainsRegex("rank 0: step [0-9]+, [a-z ]+.*current: [a-z_]+ "
                                               "on group '[a-z-]+'"))
      << output;
  // The flight records: rank 0's says how it ended, both list their last ops.
  const nlohmann::json rank0 = ReadJson(dir + "/run/flight/rank0.json");
  ASSERT_TRUE(rank0.is_object());
  EXPECT_EQ(rank0.value("end", std::string()), "hang");
  EXPECT_FALSE(rank0["ops"].empty());
  const nlohmann::json rank1 = ReadJson(dir + "/run/flight/rank1.json");
  ASSERT_TRUE(rank1.is_object());
  EXPECT_FALSE(rank1["ops"].empty());
}

TEST_F(ReliabilityFaultTest, ASigkilledRankUnderLaunchIsRestartedAndMatchesTheUninterruptedRun) {
  const std::string dir = kRoot + "/launch";
  // Rank 1 kills itself in the middle of step 7 (after its backward); the checkpoint of step 6
  // is the newest complete one (saved synchronously here: an asynchronous save may still be
  // writing, and the restart would then rightly take step 3), so step 6 is lost and redone.
  const Result r = Shell(std::string(MOEFOLD_BINARY) +
                             " launch --max-restarts 2 --restart-delay 0.2 -- " +
                             TrainCommand(dir, std::string(kTwelveSteps) +
                                                   " --set checkpoint.async=false"),
                         "MOEFOLD_INJECT_KILL=1:7");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[rank 1] injected: signal 9 in the middle of step 7"));
  EXPECT_THAT(r.output, HasSubstr("restart 1 of 2 from " + dir + "/ck/step-00000006"));
  EXPECT_THAT(r.output, HasSubstr("resumed from " + dir + "/ck/step-00000006"));
  const auto restarts = ReadLines(dir + "/run/restarts.jsonl");
  ASSERT_EQ(restarts.size(), 1u) << r.output;
  EXPECT_EQ(JsonNumberText(restarts[0], "restart"), "1");
  EXPECT_EQ(JsonNumberText(restarts[0], "resume_step"), "6");
  EXPECT_EQ(JsonNumberText(restarts[0], "steps_lost"), "1");
  EXPECT_THAT(restarts[0], HasSubstr("signal 9"));
  EXPECT_NE(JsonNumberText(restarts[0], "time_to_resume_s"), "-1") << restarts[0];
  ExpectStepsEqual(dir + "/run", Reference(), 0, 12);
}

TEST_F(ReliabilityFaultTest, SigtermOnOneRankSavesEveryRankExits75AndTheResumeIsBitExact) {
  const std::string dir = kRoot + "/sigterm";
  // SIGTERM reaches rank 1 alone, in the middle of step 4: both ranks finish step 4, save
  // step-00000005 and exit with 75.
  Result r = Shell(TrainCommand(dir, kTwelveSteps), "MOEFOLD_INJECT_KILL=1:4:15");
  EXPECT_EQ(r.exit_code, kExitPreempted) << r.output;
  EXPECT_THAT(r.output, HasSubstr("stopped by a signal after step 5, checkpoint " + dir +
                                  "/ck/step-00000005"));
  EXPECT_TRUE(fs::is_regular_file(dir + "/ck/step-00000005/manifest.pb")) << r.output;
  EXPECT_EQ(MetricsByStep(dir + "/run").size(), 5u);
  ExpectStepsEqual(dir + "/run", Reference(), 0, 5);
  // The resume continues bit-identically.
  r = Shell(TrainCommand(dir, std::string(kTwelveSteps) + " --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("resumed from " + dir + "/ck/step-00000005"));
  ExpectStepsEqual(dir + "/run", Reference(), 0, 12);
}

TEST_F(ReliabilityFaultTest, VerifyEveryStepChangesNothingWithoutAFault) {
  const std::string dir = kRoot + "/verify-clean";
  const Result r = Shell(TrainCommand(dir, std::string(kTwelveSteps) + " --set train.verify_every=1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ExpectStepsEqual(dir + "/run", Reference(), 0, 12);
  double verify_s = 0, step_s = 0;
  for (const auto& [step, line] : MetricsByStep(dir + "/run")) {
    EXPECT_EQ(JsonNumberText(line, "verify_mismatch_ranks"), "[]") << step;
    EXPECT_NE(JsonNumberText(line, "verify_s"), "0") << step;
    verify_s += std::stod(JsonNumberText(line, "verify_s"));
    step_s += std::stod(JsonNumberText(line, "step_time_s"));
  }
  std::printf("verify_every 1: the second runs took %.1f ms per step, the steps %.1f ms\n",
              verify_s / 12 * 1e3, step_s / 12 * 1e3);
}

TEST_F(ReliabilityFaultTest, AFlippedGradientBitIsDetectedAndTheRankNamed) {
  // on_mismatch stop (the default): the run ends at step 5 with the rank named.
  Result r = Shell(TrainCommand(kRoot + "/bitflip-stop",
                              std::string(kTwelveSteps) + " --set train.verify_every=3"),
                 "MOEFOLD_INJECT_BITFLIP=1:5");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[rank 1] injected: bit flip in gradient element"));
  EXPECT_THAT(r.output, HasSubstr("step 5 ran twice from the same state and the result of rank 1 "
                                  "changed"));
  // warn: logged, counted in the metrics, training goes on.
  const std::string dir = kRoot + "/bitflip-warn";
  r = Shell(TrainCommand(dir, std::string(kTwelveSteps) +
                                " --set train.verify_every=3 --set train.on_mismatch=warn"),
          "MOEFOLD_INJECT_BITFLIP=1:5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("the result of rank 1 changed"));
  const auto metrics = MetricsByStep(dir + "/run");
  ASSERT_EQ(metrics.size(), 12u);
  EXPECT_EQ(JsonNumberText(metrics.at(5), "verify_mismatch_ranks"), "[1]");
  EXPECT_EQ(JsonNumberText(metrics.at(2), "verify_mismatch_ranks"), "[]");
  EXPECT_EQ(JsonNumberText(metrics.at(8), "verify_mismatch_ranks"), "[]");
}


TEST_F(ReliabilityFaultTest, SigtermToTheLauncherReachesTheRanksWhichSaveAndStop) {
  const std::string dir = kRoot + "/launch-sigterm";
  // `exec`: the background process is the launcher itself, not a shell around it.
  Background job("exec " + std::string(MOEFOLD_BINARY) + " launch --max-restarts 2 -- " +
                     TrainCommand(dir, "--set train.steps=1000000 --set checkpoint.every=0"),
                 kRoot + "/launch-sigterm.log");
  ASSERT_GT(RankPidAtStep(dir + "/run", 0, 3), 0) << job.Output();
  ASSERT_EQ(kill(job.pid(), SIGTERM), 0);
  const int code = job.Wait(60);
  const std::string output = job.Output();
  ASSERT_EQ(code, kExitPreempted) << output;
  // Both ranks saved the step they stopped after, and the launcher did not restart the job.
  EXPECT_THAT(output, HasSubstr("stopped by a signal after step")) << output;
  EXPECT_THAT(output, HasSubstr("moefold launch: the job stopped")) << output;
  EXPECT_THAT(output, Not(HasSubstr("restart 1 of"))) << output;
  EXPECT_TRUE(ReadLines(dir + "/run/restarts.jsonl").empty());
  bool saved = false;
  for (const auto& entry : fs::directory_iterator(dir + "/ck")) {
    saved |= fs::is_regular_file(entry.path() / "manifest.pb");
  }
  EXPECT_TRUE(saved) << output;
}

TEST_F(ReliabilityFaultTest, ASecondSignalExitsAtOnceButNotTheSameRequestDeliveredTwice) {
  const std::string dir = kRoot + "/second-signal";
  // Rank 1 is stopped, so rank 0 waits in a collective and cannot reach a step boundary: only the
  // second signal can end it (well before the hang watchdog's 120 s).
  Background job(TrainCommand(dir, "--set train.steps=1000000 --set checkpoint.every=0 "
                                   "--set train.hang_timeout_s=120"),
                 kRoot + "/second-signal.log");
  const int rank1 = RankPidAtStep(dir + "/run", 1, 3);
  ASSERT_GT(rank1, 0) << job.Output();
  const int rank0 = RankPidAtStep(dir + "/run", 0, 3);
  ASSERT_GT(rank0, 0) << job.Output();
  ASSERT_EQ(kill(rank1, SIGSTOP), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_EQ(kill(rank0, SIGTERM), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(kill(rank0, SIGTERM), 0);  // within 2 s of the first: the same request, ignored
  EXPECT_EQ(job.Wait(3), -1) << "a duplicate signal ended the run\n" << job.Output();
  ASSERT_EQ(kill(rank0, SIGTERM), 0);  // a real second request
  const int code = job.Wait(20);
  kill(rank1, SIGKILL);  // the stopped rank must not linger
  const std::string output = job.Output();
  ASSERT_NE(code, -1) << "the second signal did not end the run\n" << output;
  EXPECT_NE(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("moefold: stop requested; finishing the step")) << output;
  EXPECT_THAT(output, HasSubstr("moefold: second stop signal; exiting at once")) << output;
}

}  // namespace
}  // namespace moefold::train
