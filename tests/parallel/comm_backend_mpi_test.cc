// PlaceRanks under mpirun (2 and 4 ranks, one node): the GPU ids each rank passes are gathered over
// the node and every rank gets the same backend — NCCL only when no two ranks share a GPU — and its
// own device. Fake ids stand in for GPUs, so this runs without one.
#include "gtest/gtest.h"
#include "parallel/comm_backend.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

CommBackend Distinct() { return NcclBuilt() ? CommBackend::kNccl : CommBackend::kMpiHostStaged; }

TEST(PlaceRanksTest, CpuTrainingIsMpiWithoutAnExchange) {
  MpiCommunicator world = MpiCommunicator::World();
  auto placement = PlaceRanks(world, /*gpu_training=*/false, {});
  ASSERT_OK(placement.status());
  EXPECT_EQ(placement->backend, CommBackend::kMpi);
  EXPECT_EQ(placement->device, 0);
  EXPECT_TRUE(placement->gpu.empty());
}

TEST(PlaceRanksTest, OneDistinctGpuPerRankIsNcclOnDeviceZero) {
  MpiCommunicator world = MpiCommunicator::World();
  const std::string mine = "GPU-" + std::to_string(world.rank());
  auto placement = PlaceRanks(world, true, {mine});
  ASSERT_OK(placement.status());
  EXPECT_EQ(placement->backend, Distinct());
  EXPECT_EQ(placement->device, 0);
  EXPECT_EQ(placement->gpu, mine);
}

TEST(PlaceRanksTest, RanksSeeingEveryGpuTakeTheirOwn) {
  MpiCommunicator world = MpiCommunicator::World();
  std::vector<std::string> all;
  for (int r = 0; r < world.size(); ++r) all.push_back("GPU-" + std::to_string(r));
  auto placement = PlaceRanks(world, true, all);
  ASSERT_OK(placement.status());
  EXPECT_EQ(placement->backend, Distinct());
  EXPECT_EQ(placement->device, world.rank());
}

TEST(PlaceRanksTest, OneSharedGpuMakesEveryRankHostStaged) {
  MpiCommunicator world = MpiCommunicator::World();
  // Ranks 0 and 1 both see GPU-0; the others have their own. Every rank must agree on staging.
  const std::string mine = "GPU-" + std::to_string(world.rank() == 1 ? 0 : world.rank());
  auto placement = PlaceRanks(world, true, {mine});
  ASSERT_OK(placement.status());
  EXPECT_EQ(placement->backend, CommBackend::kMpiHostStaged);
  EXPECT_EQ(placement->device, 0);
  EXPECT_NE(placement->reason.find("share"), std::string::npos) << placement->reason;
}

TEST(PlaceRanksTest, ARankWithoutGpusMakesItHostStaged) {
  MpiCommunicator world = MpiCommunicator::World();
  std::vector<std::string> mine;
  if (world.rank() != world.size() - 1) mine.push_back("GPU-" + std::to_string(world.rank()));
  auto placement = PlaceRanks(world, true, mine);
  ASSERT_OK(placement.status());
  EXPECT_EQ(placement->backend, CommBackend::kMpiHostStaged);
}

}  // namespace
}  // namespace moefold::parallel
