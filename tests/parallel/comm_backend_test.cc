// The backend and GPU of each rank of a node, decided from the physical GPUs the ranks see (a pure
// function of the gathered ids; PlaceRanks' exchange is tested in comm_backend_mpi_test).
#include "parallel/comm_backend.h"

#include "gtest/gtest.h"

namespace moefold::parallel {
namespace {

using Ids = std::vector<std::vector<std::string>>;

TEST(CommBackendTest, EachRankSeeingOneDistinctGpuIsNcclOnDeviceZero) {
  // Slurm with one GPU per task: CUDA_VISIBLE_DEVICES differs per rank, each sees "its" device 0.
  const NodePlacement plan = ChooseNodePlacement({{"GPU-a"}, {"GPU-b"}, {"GPU-c"}, {"GPU-d"}},
                                                 /*nccl_built=*/true);
  EXPECT_EQ(plan.backend, CommBackend::kNccl);
  EXPECT_EQ(plan.devices, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(plan.gpus, 4);
  EXPECT_NE(plan.reason.find("4 rank(s) of this node on 4 distinct GPU(s)"), std::string::npos)
      << plan.reason;
}

TEST(CommBackendTest, RanksSeeingEveryGpuTakeOneEach) {
  const std::vector<std::string> all = {"GPU-a", "GPU-b", "GPU-c", "GPU-d"};
  const NodePlacement plan = ChooseNodePlacement({all, all, all, all}, true);
  EXPECT_EQ(plan.backend, CommBackend::kNccl);
  EXPECT_EQ(plan.devices, (std::vector<int>{0, 1, 2, 3}));
  // Fewer ranks than GPUs: still one each.
  EXPECT_EQ(ChooseNodePlacement({all, all}, true).devices, (std::vector<int>{0, 1}));
  EXPECT_EQ(ChooseNodePlacement({all, all}, true).backend, CommBackend::kNccl);
}

TEST(CommBackendTest, DisjointSubsetsPerRankPairAreDistinct) {
  // Two ranks see GPUs a, b; two others c, d (CUDA_VISIBLE_DEVICES=0,1 and 2,3).
  const NodePlacement plan = ChooseNodePlacement(
      {{"GPU-a", "GPU-b"}, {"GPU-a", "GPU-b"}, {"GPU-c", "GPU-d"}, {"GPU-c", "GPU-d"}}, true);
  EXPECT_EQ(plan.backend, CommBackend::kNccl);
  EXPECT_EQ(plan.devices, (std::vector<int>{0, 1, 0, 1}));
}

TEST(CommBackendTest, RanksSharingAGpuAreHostStaged) {
  // A one-GPU test machine: every rank sees the same GPU.
  NodePlacement plan = ChooseNodePlacement({{"GPU-a"}, {"GPU-a"}, {"GPU-a"}, {"GPU-a"}}, true);
  EXPECT_EQ(plan.backend, CommBackend::kMpiHostStaged);
  EXPECT_EQ(plan.devices, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(plan.gpus, 1);
  EXPECT_NE(plan.reason.find("share"), std::string::npos) << plan.reason;
  // More ranks than GPUs: round-robin beyond the first of each.
  const std::vector<std::string> two = {"GPU-a", "GPU-b"};
  plan = ChooseNodePlacement({two, two, two, two, two}, true);
  EXPECT_EQ(plan.backend, CommBackend::kMpiHostStaged);
  EXPECT_EQ(plan.devices, (std::vector<int>{0, 1, 0, 1, 0}));
  // Two ranks pinned to the same physical GPU by their own CUDA_VISIBLE_DEVICES.
  EXPECT_EQ(ChooseNodePlacement({{"GPU-a"}, {"GPU-b"}, {"GPU-a"}}, true).backend,
            CommBackend::kMpiHostStaged);
}

TEST(CommBackendTest, NoGpuUnknownIdentityOrNoNcclIsHostStaged) {
  EXPECT_EQ(ChooseNodePlacement({{"GPU-a"}, {}}, true).backend, CommBackend::kMpiHostStaged);
  EXPECT_EQ(ChooseNodePlacement({{""}, {"GPU-b"}}, true).backend, CommBackend::kMpiHostStaged);
  const NodePlacement plan = ChooseNodePlacement({{"GPU-a"}, {"GPU-b"}}, /*nccl_built=*/false);
  EXPECT_EQ(plan.backend, CommBackend::kMpiHostStaged);
  EXPECT_NE(plan.reason.find("no NCCL"), std::string::npos) << plan.reason;
}

TEST(CommBackendTest, OneRankOneGpuIsNccl) {
  EXPECT_EQ(ChooseNodePlacement({{"GPU-a"}}, true).backend, CommBackend::kNccl);
  EXPECT_EQ(ChooseNodePlacement({{"GPU-a"}}, true).devices, std::vector<int>{0});
}

TEST(CommBackendTest, BackendNames) {
  EXPECT_EQ(CommBackendName(CommBackend::kMpi), "MPI");
  EXPECT_EQ(CommBackendName(CommBackend::kNccl), "NCCL");
  EXPECT_EQ(CommBackendName(CommBackend::kMpiHostStaged), "host-staged MPI");
}

}  // namespace
}  // namespace moefold::parallel
