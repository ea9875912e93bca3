// Which backend a job's groups use and which GPU a rank takes (pure functions of the node).
#include "gtest/gtest.h"
#include "parallel/process_groups.h"

namespace moefold::parallel {
namespace {

TEST(CommBackendTest, CpuTensorsUseMpiWhateverTheNodeHas) {
  EXPECT_EQ(ChooseCommBackend(false, 8, 8), CommBackend::kMpi);
  EXPECT_EQ(ChooseCommBackend(false, 2, 0), CommBackend::kMpi);
}

TEST(CommBackendTest, GpuTensorsUseNcclWithAGpuPerRankElseHostStagedMpi) {
  EXPECT_EQ(ChooseCommBackend(true, 8, 8), CommBackend::kNccl);
  EXPECT_EQ(ChooseCommBackend(true, 4, 8), CommBackend::kNccl);
  EXPECT_EQ(ChooseCommBackend(true, 1, 1), CommBackend::kNccl);
  EXPECT_EQ(ChooseCommBackend(true, 2, 1), CommBackend::kMpiHostStaged);  // a one-GPU test box
  EXPECT_EQ(ChooseCommBackend(true, 9, 8), CommBackend::kMpiHostStaged);
  EXPECT_EQ(ChooseCommBackend(true, 2, 0), CommBackend::kMpiHostStaged);  // the trainer refuses
}

TEST(CommBackendTest, RanksShareGpusRoundRobin) {
  EXPECT_EQ(DeviceForLocalRank(0, 8), 0);
  EXPECT_EQ(DeviceForLocalRank(7, 8), 7);
  EXPECT_EQ(DeviceForLocalRank(3, 1), 0);
  EXPECT_EQ(DeviceForLocalRank(5, 2), 1);
}

}  // namespace
}  // namespace moefold::parallel
