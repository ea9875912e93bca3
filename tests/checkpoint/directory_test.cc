// The checkpoint directory: which checkpoint a resume picks (the `latest` pointer when it names the
// newest complete one; else the highest complete step; never a .tmp or a directory without its
// manifest), and what Prune keeps.
#include "checkpoint/directory.h"

#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/files.h"
#include "gmock/gmock.h"
#include "tests/checkpoint/scratch_dir.h"
#include "tests/testing/testing.h"

namespace moefold::checkpoint {
namespace {
namespace fs = std::filesystem;
using ::testing::ElementsAre;

// A complete checkpoint as far as the directory is concerned: step-N/ with a manifest in it.
void MakeComplete(const std::string& root, int64_t step) {
  fs::create_directories(StepDir(root, step));
  ASSERT_OK(WriteFileAtomically(StepDir(root, step) + "/" + kManifestName, "m"));
}

// An interrupted save: step-N.tmp/ with a shard but no manifest.
void MakeTemp(const std::string& root, int64_t step) {
  fs::create_directories(TempStepDir(root, step));
  ASSERT_OK(WriteFileAtomically(TempStepDir(root, step) + "/" + ShardName(0), "shard"));
}

TEST(DirectoryTest, Names) {
  EXPECT_EQ(StepDirName(6), "step-00000006");
  EXPECT_EQ(StepDir("ck", 12), "ck/step-00000012");
  EXPECT_EQ(TempStepDir("ck", 12), "ck/step-00000012.tmp");
  EXPECT_EQ(ShardName(3), "rank-00003.bin");
  EXPECT_EQ(RecordName(3), "rank-00003.record");
}

TEST(DirectoryTest, LatestNamingTheNewestCompleteCheckpointIsUsed) {
  ScratchDir dir("latest-ok");
  MakeComplete(dir.path(), 3);
  MakeComplete(dir.path(), 6);
  ASSERT_OK(UpdateLatest(dir.path(), StepDirName(6)));
  EXPECT_EQ(FindLatestComplete(dir.path()), StepDir(dir.path(), 6));
  EXPECT_THAT(ListComplete(dir.path()),
              ElementsAre(StepDir(dir.path(), 3), StepDir(dir.path(), 6)));
}

TEST(DirectoryTest, AStaleLatestDoesNotHideANewerCheckpoint) {
  ScratchDir dir("latest-stale");
  MakeComplete(dir.path(), 3);
  MakeComplete(dir.path(), 6);
  // The pointer update after step 6's rename was lost.
  ASSERT_OK(UpdateLatest(dir.path(), StepDirName(3)));
  EXPECT_EQ(FindLatestComplete(dir.path()), StepDir(dir.path(), 6));
}

TEST(DirectoryTest, ALatestNamingAnIncompleteOrMissingDirectoryFallsBack) {
  ScratchDir dir("latest-bad");
  MakeComplete(dir.path(), 3);
  MakeTemp(dir.path(), 6);
  fs::create_directories(StepDir(dir.path(), 9));  // a step directory without its manifest
  ASSERT_OK(UpdateLatest(dir.path(), StepDirName(9)));
  EXPECT_EQ(FindLatestComplete(dir.path()), StepDir(dir.path(), 3));
  ASSERT_OK(UpdateLatest(dir.path(), "step-00000012"));
  EXPECT_EQ(FindLatestComplete(dir.path()), StepDir(dir.path(), 3));
  ASSERT_OK(UpdateLatest(dir.path(), "garbage"));
  EXPECT_EQ(FindLatestComplete(dir.path()), StepDir(dir.path(), 3));
}

TEST(DirectoryTest, AMissingLatestFindsTheHighestCompleteStep) {
  ScratchDir dir("latest-missing");
  MakeComplete(dir.path(), 10);
  MakeComplete(dir.path(), 9);
  MakeComplete(dir.path(), 100);
  MakeTemp(dir.path(), 200);
  // Numeric order, not the order of names or of creation.
  EXPECT_EQ(FindLatestComplete(dir.path()), StepDir(dir.path(), 100));
}

TEST(DirectoryTest, OnlyAnInterruptedSaveMeansNoCheckpoint) {
  ScratchDir dir("only-tmp");
  MakeTemp(dir.path(), 3);
  EXPECT_EQ(FindLatestComplete(dir.path()), std::nullopt);
  EXPECT_TRUE(ListComplete(dir.path()).empty());
  EXPECT_EQ(FindLatestComplete(dir.path() + "/does-not-exist"), std::nullopt);
}

TEST(DirectoryTest, PruneKeepsTheNewestAndRemovesInterruptedSaves) {
  ScratchDir dir("prune");
  for (int64_t step : {3, 6, 9, 12}) MakeComplete(dir.path(), step);
  MakeTemp(dir.path(), 15);
  MakeTemp(dir.path(), 18);
  ASSERT_OK(UpdateLatest(dir.path(), StepDirName(12)));
  // The save of step 18 is in progress: its .tmp stays.
  ASSERT_OK(Prune(dir.path(), 2, TempStepDir(dir.path(), 18)));
  EXPECT_THAT(Entries(dir.path()),
              ElementsAre("latest", "step-00000009", "step-00000012", "step-00000018.tmp"));
  EXPECT_EQ(FindLatestComplete(dir.path()), StepDir(dir.path(), 12));
}

TEST(DirectoryTest, PruneWithKeepLastZeroKeepsEveryCheckpoint) {
  ScratchDir dir("prune-all");
  for (int64_t step : {1, 2, 3}) MakeComplete(dir.path(), step);
  MakeTemp(dir.path(), 4);
  ASSERT_OK(Prune(dir.path(), 0));
  EXPECT_THAT(Entries(dir.path()), ElementsAre("step-00000001", "step-00000002", "step-00000003"));
  ASSERT_OK(Prune(dir.path(), 1));
  EXPECT_THAT(Entries(dir.path()), ElementsAre("step-00000003"));
}

}  // namespace
}  // namespace moefold::checkpoint
