// Checkpoints through the `moefold` binary (under mpirun for two ranks) on a tiny model, with the
// faults a real run meets: a rank killed in the middle of an asynchronous save, a corrupted or
// truncated shard, a save that fails (injected, or a directory that cannot be made) under
// on_error stop and warn, and resumes that must be refused or accepted. The invariants: an
// interrupted save is never taken for a checkpoint, a resumed run continues bit-identically, and
// every error names the file, tensor, step or setting at fault.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "checkpoint/directory.h"
#include "checkpoint/reader.h"
#include "gmock/gmock.h"
#include "tests/checkpoint/scratch_dir.h"
#include "tests/testing/run_command.h"
#include "tests/testing/testing.h"

namespace moefold::checkpoint {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// The model and batch of the equivalence tests (tests/train/equivalence.cc): a run of the binary
// takes about a second.
constexpr char kTinyRun[] =
    "train --config configs/tiny_moe.yaml --set model.hidden_size=32 --set model.num_layers=2 "
    "--set model.num_heads=8 --set model.num_kv_heads=4 --set model.head_dim=8 "
    "--set model.ffn_hidden_size=64 --set model.moe.num_experts=4 --set model.moe.top_k=2 "
    "--set model.moe.expert_ffn_hidden_size=32 --set model.moe.num_shared_experts=1 "
    "--set model.moe.first_dense_layers=1 --set train.seq_len=16 --set train.global_batch_size=8 "
    "--set train.micro_batch_size=2 --set optimizer.warmup_steps=2 "
    "--set data.cache_dir=build/test-data --set logging.progress=never";
// The run every fault is measured against: 9 steps on 2 ranks with ZeRO-1 (so both ranks' shards
// hold moments), a checkpoint every 3.
constexpr char kNineSteps[] =
    " --set train.steps=9 --set parallel.zero1=true --set checkpoint.every=3 "
    "--set checkpoint.keep_last=2";

const std::string kRoot = "build/test-runs/checkpoint-faults";

using Result = moefold::testing::CommandResult;
using moefold::testing::JsonNumberText;
using moefold::testing::MpirunPrefix;
using moefold::testing::ReadLines;
using moefold::testing::RunCommand;

// `moefold train` of the tiny model on `ranks` ranks, saving to `ck_dir`, metrics in `run_dir`.
Result Train(int ranks, const std::string& ck_dir, const std::string& run_dir,
             const std::string& args, const std::string& env = "") {
  const std::string launcher = ranks == 1 ? std::string() : MpirunPrefix(ranks);
  return RunCommand(env + " " + launcher + MOEFOLD_BINARY + " " + kTinyRun +
                    " --set checkpoint.dir=" + ck_dir + " --run-dir " + run_dir + " " + args);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  std::getline(in, text);
  return text;
}

bool IsComplete(const std::string& dir) { return fs::is_regular_file(dir + "/" + kManifestName); }

// A fresh checkpoint root holding a copy of `step_dir` as its only (and latest) checkpoint.
std::string CopyCheckpoint(const std::string& step_dir, const std::string& name) {
  const std::string root = kRoot + "/" + name;
  fs::remove_all(root);
  fs::create_directories(root);
  const std::string step = fs::path(step_dir).filename().string();
  fs::copy(step_dir, root + "/" + step, fs::copy_options::recursive);
  std::ofstream(root + "/" + kLatestName) << step << "\n";
  return root;
}

// Reads every piece of a checkpoint (checksums included): it is whole and loadable.
void ExpectLoadable(const std::string& dir) {
  auto reader = CheckpointReader::Open(dir);
  ASSERT_OK(reader);
  const Manifest& m = (*reader)->manifest();
  ASSERT_GT(m.pieces_size(), 0) << dir;
  for (const Piece& p : m.pieces()) {
    BoxRange box;
    box.offset.assign(p.box_offset().begin(), p.box_offset().end());
    box.shape.assign(p.box_shape().begin(), p.box_shape().end());
    box.flat_begin = p.flat_begin();
    box.flat_end = p.flat_end();
    std::vector<float> out(p.flat_end() - p.flat_begin());
    EXPECT_OK((*reader)->Read(p.tensor(), p.kind(), box, out.data()));
  }
}

class CheckpointFaultTest : public ::testing::Test {
 protected:
  // The uninterrupted reference run, once for the suite.
  static void SetUpTestSuite() {
    fs::remove_all(kRoot);
    fs::create_directories(kRoot);
    reference_ = new Result(Train(2, kRoot + "/reference/ck", kRoot + "/reference/run", kNineSteps));
  }
  static void TearDownTestSuite() {
    delete reference_;
    reference_ = nullptr;
  }
  void SetUp() override {
    ASSERT_EQ(reference_->exit_code, 0) << reference_->output;
  }
  static std::string ReferenceCk() { return kRoot + "/reference/ck"; }
  static std::vector<std::string> ReferenceMetrics() {
    return ReadLines(kRoot + "/reference/run/metrics.jsonl");
  }

  static Result* reference_;
};
Result* CheckpointFaultTest::reference_ = nullptr;

TEST_F(CheckpointFaultTest, KeepLastKeepsTheTwoNewestAndLatestNamesTheNewest) {
  EXPECT_THAT(Entries(ReferenceCk()), ::testing::ElementsAre("latest", "step-00000006",
                                                             "step-00000009"));
  EXPECT_EQ(ReadText(ReferenceCk() + "/" + kLatestName), "step-00000009");
  EXPECT_TRUE(IsComplete(StepDir(ReferenceCk(), 6)));
  EXPECT_TRUE(IsComplete(StepDir(ReferenceCk(), 9)));
  EXPECT_THAT(reference_->output, HasSubstr("checkpoint       " + StepDir(ReferenceCk(), 9)));
  const auto lines = ReferenceMetrics();
  ASSERT_EQ(lines.size(), 9u);
  for (const std::string& line : lines) EXPECT_THAT(line, HasSubstr("\"checkpoint_stall_s\": "));
}

TEST_F(CheckpointFaultTest, SigkillDuringAnAsyncSaveLosesNothingBeyondThePreviousCheckpoint) {
  const std::string ck = kRoot + "/killed/ck";
  // Rank 1 dies while writing step 6's checkpoint in the background; mpirun ends the job.
  Result r = Train(2, ck, kRoot + "/killed/run", kNineSteps,
                   "MOEFOLD_INJECT_CHECKPOINT=1:6:kill");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[rank 1] injected: killed while writing a checkpoint"));
  EXPECT_TRUE(IsComplete(StepDir(ck, 3))) << r.output;
  EXPECT_FALSE(fs::exists(StepDir(ck, 6))) << "only a .tmp of step 6 may exist";
  EXPECT_FALSE(IsComplete(TempStepDir(ck, 6)));
  EXPECT_FALSE(fs::exists(StepDir(ck, 9)));
  EXPECT_EQ(ReadText(ck + "/" + kLatestName), "step-00000003");
  EXPECT_EQ(FindLatestComplete(ck), StepDir(ck, 3));

  // The same command with --resume and no fault: steps 3..8 equal the uninterrupted run's.
  r = Train(2, ck, kRoot + "/killed/resumed", std::string(kNineSteps) + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("resumed from " + StepDir(ck, 3) + " (step 3, same layout)"));
  const auto resumed = ReadLines(kRoot + "/killed/resumed/metrics.jsonl");
  const auto reference = ReferenceMetrics();
  ASSERT_EQ(resumed.size(), 6u) << r.output;
  ASSERT_EQ(reference.size(), 9u);
  for (size_t i = 0; i < resumed.size(); ++i) {
    const std::string& want = reference[3 + i];
    EXPECT_EQ(JsonNumberText(resumed[i], "step"), std::to_string(3 + i));
    for (const char* key : {"loss", "lm_loss", "aux_loss", "grad_norm", "lr"}) {
      EXPECT_EQ(JsonNumberText(resumed[i], key), JsonNumberText(want, key)) << key << " at step " << 3 + i;
    }
    EXPECT_THAT(resumed[i], HasSubstr("\"checkpoint_stall_s\": ")) << "line " << i;
  }
  // The resumed run saved 6 and 9 over the leftover .tmp, keeping the newest two.
  EXPECT_THAT(Entries(ck), ::testing::ElementsAre("latest", "step-00000006", "step-00000009"));
}

TEST_F(CheckpointFaultTest, ACorruptedShardIsRefusedNamingTheFileAndTheTensor) {
  const std::string root = CopyCheckpoint(StepDir(ReferenceCk(), 9), "corrupted");
  const std::string shard = StepDir(root, 9) + "/" + ShardName(0);
  ASSERT_GT(fs::file_size(shard), 1000u);
  const int64_t flipped = static_cast<int64_t>(fs::file_size(shard)) / 2;
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(flipped);
    char c = 0;
    f.read(&c, 1);
    f.seekp(flipped);
    f.put(static_cast<char>(c ^ 0x01));
  }
  // Which tensor the byte belongs to, from the manifest.
  auto manifest = ReadManifest(StepDir(root, 9));
  ASSERT_OK(manifest);
  std::string tensor;
  for (const Piece& p : manifest->pieces()) {
    const int64_t bytes = (p.flat_end() - p.flat_begin()) * 4;
    if (p.rank() == 0 && p.byte_offset() <= flipped && flipped < p.byte_offset() + bytes) {
      tensor = p.tensor() + " (" + p.kind() + ")";
    }
  }
  ASSERT_FALSE(tensor.empty());
  const Result r = Train(1, root, kRoot + "/corrupted/run", "--set train.steps=12 --resume");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(shard));
  EXPECT_THAT(r.output, HasSubstr("tensor " + tensor + " fails its checksum"));
  EXPECT_THAT(r.output, Not(HasSubstr("moefold summary")));
}

TEST_F(CheckpointFaultTest, ATruncatedShardIsRefusedNamingTheFile) {
  const std::string root = CopyCheckpoint(StepDir(ReferenceCk(), 9), "truncated");
  const std::string shard = StepDir(root, 9) + "/" + ShardName(0);
  fs::resize_file(shard, fs::file_size(shard) / 2);
  const Result r = Train(1, root, kRoot + "/truncated/run", "--set train.steps=12 --resume");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("checkpoint shard " + shard));
  EXPECT_THAT(r.output, HasSubstr("truncated"));
}

TEST_F(CheckpointFaultTest, AFailedSaveWithOnErrorStopEndsTheRunNamingTheStep) {
  const std::string ck = kRoot + "/fail-stop/ck";
  const Result r = Train(2, ck, kRoot + "/fail-stop/run",
                         "--set train.steps=6 --set checkpoint.every=2 "
                         "--set checkpoint.on_error=stop",
                         "MOEFOLD_INJECT_CHECKPOINT=0:4:fail");
  EXPECT_NE(r.exit_code, 0) << r.output;
  // Whichever rank reports first (and ends the job) names the failed rank's reason.
  EXPECT_THAT(r.output, HasSubstr("checkpoint save of step 4 failed: "));
  EXPECT_THAT(r.output, HasSubstr("injected checkpoint write failure (the previous checkpoint is "
                                  "intact)"));
  EXPECT_THAT(Entries(ck), ::testing::ElementsAre("latest", "step-00000002"));
  EXPECT_EQ(ReadText(ck + "/" + kLatestName), "step-00000002");
  ExpectLoadable(StepDir(ck, 2));
}

TEST_F(CheckpointFaultTest, AFailedSaveWithOnErrorWarnGoesOnAndThePreviousCheckpointResumes) {
  const std::string ck = kRoot + "/fail-warn/ck";
  // The last step's save fails: the run still ends well, and step 2 stays the newest.
  Result r = Train(2, ck, kRoot + "/fail-warn/run",
                   "--set train.steps=4 --set checkpoint.every=2 --set checkpoint.on_error=warn",
                   "MOEFOLD_INJECT_CHECKPOINT=1:4:fail");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("warning: checkpoint save of step 4 failed: "));
  // Rank 0, whose part was written, names rank 1's reason.
  EXPECT_THAT(r.output, HasSubstr("failed: rank 1: injected checkpoint write failure"));
  EXPECT_THAT(r.output, HasSubstr("training continues (checkpoint.on_error: warn)"));
  EXPECT_EQ(ReadLines(kRoot + "/fail-warn/run/metrics.jsonl").size(), 4u);
  EXPECT_THAT(Entries(ck), ::testing::ElementsAre("latest", "step-00000002"));
  ExpectLoadable(StepDir(ck, 2));
  r = Train(1, ck, kRoot + "/fail-warn/resumed", "--set train.steps=4 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("resumed from " + StepDir(ck, 2) + " (step 2, resharded"));
  EXPECT_TRUE(IsComplete(StepDir(ck, 4)));
}

TEST_F(CheckpointFaultTest, ADirectoryThatCannotBeMadeFailsTheSaveOrWarns) {
  const std::string file = kRoot + "/not-a-dir";
  std::ofstream(file) << "a regular file\n";
  const std::string ck = file + "/ck";
  Result r = Train(1, ck, kRoot + "/bad-dir/run",
                   "--set train.steps=3 --set checkpoint.every=2 --set checkpoint.on_error=stop");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("checkpoint save of step 2 failed: cannot create checkpoint "
                                  "directory " + TempStepDir(ck, 2)));
  r = Train(1, ck, kRoot + "/bad-dir/warned",
            "--set train.steps=3 --set checkpoint.every=2 --set checkpoint.on_error=warn");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("warning: checkpoint save of step 2 failed: cannot create "
                                  "checkpoint directory " + TempStepDir(ck, 2)));
  EXPECT_THAT(r.output, HasSubstr("warning: checkpoint save of step 3 failed: cannot create "
                                  "checkpoint directory " + TempStepDir(ck, 3)));
  EXPECT_EQ(ReadLines(kRoot + "/bad-dir/warned/metrics.jsonl").size(), 3u);
}

TEST_F(CheckpointFaultTest, AChangedModelIsRefusedByNameAndALongerRunIsAccepted) {
  const std::string root = CopyCheckpoint(StepDir(ReferenceCk(), 9), "settings");
  Result r = Train(1, root, kRoot + "/settings/run",
                   "--set train.steps=12 --set model.hidden_size=64 --resume");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("another model or data"));
  EXPECT_THAT(r.output, HasSubstr("hidden_size"));
  r = Train(1, root, kRoot + "/settings/run", "--set train.steps=5 --resume");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("is at step 9, beyond train.steps 5"));
  // Extending the run: steps 9 and 10 are trained and step 11 is saved.
  r = Train(1, root, kRoot + "/settings/extended", "--set train.steps=11 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("resumed from " + StepDir(root, 9)));
  const auto lines = ReadLines(kRoot + "/settings/extended/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(JsonNumberText(lines[0], "step"), "9");
  EXPECT_TRUE(IsComplete(StepDir(root, 11)));
  EXPECT_EQ(ReadText(root + "/" + kLatestName), "step-00000011");
}

TEST_F(CheckpointFaultTest, ResumeWithNoCheckpointStartsFromScratch) {
  const std::string ck = kRoot + "/empty/ck";
  const Result r = Train(1, ck, kRoot + "/empty/run", "--set train.steps=2 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("resume: no complete checkpoint in " + ck +
                                  ", starting from scratch"));
  const auto lines = ReadLines(kRoot + "/empty/run/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(JsonNumberText(lines[0], "step"), "0");
  EXPECT_TRUE(IsComplete(StepDir(ck, 2)));
}

TEST_F(CheckpointFaultTest, SaveStallAsyncAgainstSynchronous) {
  // One rank saving every 4 of 16 steps. A save stalls training twice: when it starts (the host
  // copy; with checkpoint.async=false also the shard's write and fsync) and at the first step
  // boundary after every rank's files are written (rank 0's manifest, rename and `latest`).
  // Printed per save for the record; timings on shared cores vary too much to compare here.
  double per_save[2] = {0, 0};
  for (int async = 0; async < 2; ++async) {
    const std::string name = async ? "stall-async" : "stall-sync";
    const Result r = Train(1, kRoot + "/" + name + "/ck", kRoot + "/" + name + "/run",
                           std::string("--set train.steps=16 --set checkpoint.every=4 "
                                       "--set checkpoint.async=") +
                               (async ? "true" : "false"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto lines = ReadLines(kRoot + "/" + name + "/run/metrics.jsonl");
    ASSERT_EQ(lines.size(), 16u);
    for (const std::string& line : lines) {
      const double s = std::stod(JsonNumberText(line, "checkpoint_stall_s"));
      EXPECT_GE(s, 0.0);
      per_save[async] += s / 4;
    }
    EXPECT_TRUE(IsComplete(StepDir(kRoot + "/" + name + "/ck", 16)));
  }
  std::printf("checkpoint_stall_s per save (tiny model, 0.6 MB): async=false %.2f ms, "
              "async=true %.2f ms\n",
              per_save[0] * 1e3, per_save[1] * 1e3);
  EXPECT_GT(per_save[0], 0.0);
  EXPECT_GT(per_save[1], 0.0);
}

}  // namespace
}  // namespace moefold::checkpoint
