// ProcessGroups under mpirun with 8 ranks and attention TP2·CP2·DP2 / MoE ETP1·EP4·EDP2: each
// communicator holds exactly the ranks the mapping says, and a sum over it adds those ranks; groups
// over a sub-world; the NCCL backend refused in builds without it.
#include <mpi.h>

#include <numeric>

#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

TEST(ProcessGroupsTest, EveryGroupMatchesTheMappingAndReducesOverItsRanks) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  auto mapping = Mapping::Create(8, {.tp = 2, .cp = 2, .etp = 1, .ep = 4});
  ASSERT_TRUE(mapping.ok()) << mapping.status();
  auto groups = ProcessGroups::Create(*mapping);
  ASSERT_TRUE(groups.ok()) << groups.status();
  for (GroupKind kind : kAllGroupKinds) {
    const std::vector<int>& expected = mapping->GroupOf(kind, rank);
    auto comm = (*groups)->Get(kind);
    ASSERT_TRUE(comm.ok()) << GroupKindName(kind);
    EXPECT_EQ((*comm)->world_ranks(), expected) << GroupKindName(kind);
    EXPECT_EQ((*comm)->name(), GroupKindName(kind));
    Tensor t = Tensor::FromVectorI32({rank}, {1});
    ASSERT_OK(WaitFor((*comm)->AllReduce(&t, {})));
    EXPECT_EQ(t.data<int32_t>()[0], std::accumulate(expected.begin(), expected.end(), 0))
        << GroupKindName(kind);
  }
  EXPECT_EQ((*groups)->world().size(), 8);
}

TEST(ProcessGroupsTest, GroupsOverAGivenWorldKeepMpiWorldRanks) {
  // Two halves of 4 ranks each build TP2·DP2 groups over their own "world"; the communicators list
  // MPI_COMM_WORLD ranks, i.e. the mapping's ranks shifted by the half's first rank.
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MpiCommunicator world = MpiCommunicator::World();
  auto half = world.Split(rank / 4, rank, "half");
  ASSERT_TRUE(half.ok()) << half.status();
  auto mapping = Mapping::Create(4, {.tp = 2});
  ASSERT_TRUE(mapping.ok()) << mapping.status();
  auto groups = ProcessGroups::Create(*mapping, {.world = half->get()});
  ASSERT_TRUE(groups.ok()) << groups.status();
  const int base = rank / 4 * 4;
  for (GroupKind kind : {GroupKind::kTp, GroupKind::kDp}) {
    std::vector<int> expected = mapping->GroupOf(kind, rank - base);
    for (int& r : expected) r += base;
    auto comm = (*groups)->Get(kind);
    ASSERT_TRUE(comm.ok()) << comm.status();
    EXPECT_EQ((*comm)->world_ranks(), expected) << GroupKindName(kind);
  }
  EXPECT_EQ((*groups)->world().size(), 4);
  EXPECT_EQ((*groups)->world().name(), "world");
}

TEST(ProcessGroupsTest, NcclNeedsABuildWithNccl) {
#ifdef MOEFOLD_HAVE_NCCL
  GTEST_SKIP() << "built with NCCL: nccl_communicator_mpi_test covers the NCCL backend";
#else
  auto mapping = Mapping::Create(8, {});
  ASSERT_TRUE(mapping.ok());
  auto groups = ProcessGroups::Create(*mapping, {.backend = CommBackend::kNccl});
  EXPECT_EQ(groups.status().code(), absl::StatusCode::kUnimplemented) << groups.status();
  EXPECT_NE(groups.status().message().find("CUDA and NCCL"), absl::string_view::npos);
#endif
}

TEST(ProcessGroupsTest, AMappingForAnotherWorldIsRefused) {
  auto mapping = Mapping::Create(4, {});
  ASSERT_TRUE(mapping.ok());
  auto groups = ProcessGroups::Create(*mapping);
  ASSERT_FALSE(groups.ok());
  EXPECT_NE(groups.status().message().find("mapping is for 4 ranks but the job has 8"),
            absl::string_view::npos)
      << groups.status();
}

}  // namespace
}  // namespace moefold::parallel
