// GradSync's progress hook under mpirun (2 and 4 ranks): a bucket launched by MarkReady completes
// through Progress() alone — the polls an MPI collective needs to advance — while the "backward"
// goes on, so Finish() finds it done; timed, its wait is (nearly) nothing while it was in flight.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"
#include "parallel/timed_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

TEST(GradSyncProgressTest, ABucketLaunchedEarlyCompletesThroughProgressAlone) {
  auto timeline = std::make_shared<CommTimeline>(CpuStream());
  TimedCommunicator dp(std::make_unique<MpiCommunicator>(MpiCommunicator::World("dp-cp")),
                       timeline);
  const int rank = dp.rank(), size = dp.size();
  ParameterSet params;
  params.Add("model.embed.weight", {64, 16}, GradReduction::kDenseDataCp, 0.02f);
  params.Add("model.layers.0.attn.weight", {64, 16}, GradReduction::kDenseDataCp, 0.02f);
  params.Add("model.head.weight", {64, 16}, GradReduction::kDenseDataCp, 0.02f);
  GradSyncGroups groups;
  groups.dp_cp = &dp;
  auto& buffers = params.Flatten(GradSync::Alignment(groups));
  // One bucket per parameter.
  GradSyncOptions options;
  options.bucket_elements = 64 * 16;
  GradSync sync(&params, groups, options);
  ASSERT_EQ(sync.buckets().size(), 3u);
  sync.BeginStep(0);
  float* g = buffers[0].grads.data<float>();
  for (int64_t i = 0; i < buffers[0].grads.numel(); ++i) g[i] = static_cast<float>(rank + 1);
  ASSERT_OK(timeline->Take().status());

  // Backward: the head's gradient is final first; its bucket launches.
  const auto start = std::chrono::steady_clock::now();
  ASSERT_OK(sync.MarkReady(2, 3));
  EXPECT_LE(sync.Progress(), 1);
  // The rest of the backward: compute, with a progress call at each "layer boundary".
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (sync.Progress() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(sync.Progress(), 0) << "the head's bucket completed without a Wait";
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  ASSERT_OK(sync.MarkReady(0, 2));
  ASSERT_OK(sync.Finish());
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const float sum = static_cast<float>(size * (size + 1) / 2);
  for (int64_t i = 0; i < buffers[0].grads.numel(); ++i) ASSERT_EQ(g[i], sum) << i;

  auto times = timeline->Take();
  ASSERT_OK(times.status());
  const CommTime& time = times->at("dp-cp");
  EXPECT_EQ(time.ops, 3);
  // The 60 ms of compute after the head's bucket completed (observed by the polls) and before the
  // other buckets launched are in neither figure.
  EXPECT_LE(time.exposed_s, time.total_s);
  EXPECT_LT(time.total_s, wall - 0.055);
}

}  // namespace
}  // namespace moefold::parallel
