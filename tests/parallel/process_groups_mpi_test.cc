// ProcessGroups under mpirun with 8 ranks and attention TP2·CP2·DP2 / MoE ETP1·EP4·EDP2: each
// communicator holds exactly the ranks the mapping says, and a sum over it adds those ranks.
#include "parallel/process_groups.h"

#include <mpi.h>

#include <numeric>

#include "gtest/gtest.h"
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
