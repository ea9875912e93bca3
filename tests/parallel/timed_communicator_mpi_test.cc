// The communication timing decorator on MPI (2 and 4 ranks): a peer that joins late makes the wait
// exposed; computation between issue and wait hides it; time after an observed completion is not
// communication; ops in flight together count once; kinds are kept apart; each Take starts a new
// record; errors and every op pass through.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"
#include "parallel/timed_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

using std::chrono::milliseconds;

void Sleep(int ms) { std::this_thread::sleep_for(milliseconds(ms)); }

struct Timed {
  std::shared_ptr<CommTimeline> timeline = std::make_shared<CommTimeline>(CpuStream());
  TimedCommunicator comm{std::make_unique<MpiCommunicator>(MpiCommunicator::World("dp")), timeline};
  CommTime Take(const std::string& kind = "dp") {
    auto times = timeline->Take();
    MF_CHECK(times.ok()) << times.status();
    return (*times)[kind];
  }
};

TEST(TimedCommunicatorTest, APeerThatJoinsLateMakesTheWaitExposed) {
  Timed t;
  ASSERT_OK(WaitFor(t.comm.Barrier({})));
  t.Take();
  // Every rank but 0 computes 150 ms before joining; rank 0 waits for them at once.
  if (t.comm.rank() != 0) Sleep(150);
  Tensor x = Tensor::FromVector({1.0f}, {1});
  ASSERT_OK(WaitFor(t.comm.AllReduce(&x, {})));
  EXPECT_EQ(x.ToVector()[0], static_cast<float>(t.comm.size()));
  const CommTime time = t.Take();
  EXPECT_EQ(time.ops, 1);
  EXPECT_LE(time.exposed_s, time.total_s);
  if (t.comm.rank() == 0) {
    EXPECT_GT(time.exposed_s, 0.075) << "rank 0 waited for its late peers";
  }
}

TEST(TimedCommunicatorTest, ComputationBetweenIssueAndWaitHidesIt) {
  Timed t;
  ASSERT_OK(WaitFor(t.comm.Barrier({})));
  t.Take();
  const auto start = std::chrono::steady_clock::now();
  // The host's time inside the communicator's calls (the issue, the polls, the wait): all that
  // the compute may be counted as waiting.
  double in_calls = 0;
  auto timed_call = [&](auto&& call) {
    const auto before = std::chrono::steady_clock::now();
    auto result = call();
    in_calls += std::chrono::duration<double>(std::chrono::steady_clock::now() - before).count();
    return result;
  };
  Tensor x = Tensor::FromVector({1.0f, 2.0f}, {2});
  auto work = timed_call([&] { return t.comm.AllReduce(&x, {}); });
  ASSERT_OK(work.status());
  // "Compute" for 100 ms in 1 ms slices with a poll between them, as GradSync::Progress does at
  // layer boundaries: the reduction completes during the computation, without a Wait.
  bool seen_done = false;
  for (int slice = 0; slice < 100; ++slice) {
    Sleep(1);
    if (!seen_done) seen_done = timed_call([&] { return (*work)->IsCompleted(); });
  }
  ASSERT_OK(timed_call([&] { return (*work)->Wait(); }));
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(x.ToVector()[1], 2.0f * t.comm.size());
  const CommTime time = t.Take();
  EXPECT_GT(time.total_s, 0);
  // The polls and the final wait are all the compute waited; the slices between polls were spent
  // computing while the reduction was in flight. (Compared with the calls' own time, not with
  // the op's: on oversubscribed cores a poll can take a good part of a fast reduction.)
  EXPECT_LE(time.exposed_s, in_calls + 1e-3);
  EXPECT_LT(time.exposed_s, 0.25 * wall);
  if (seen_done) {
    // Completion was observed before the end of the computation: the rest is not communication.
    EXPECT_LT(time.total_s, wall);
  }
}

TEST(TimedCommunicatorTest, TimeAfterAnObservedCompletionIsNotCommunication) {
  Timed t;
  ASSERT_OK(WaitFor(t.comm.Barrier({})));
  t.Take();
  const auto start = std::chrono::steady_clock::now();
  Tensor x = Tensor::FromVector({1.0f}, {1});
  auto work = t.comm.AllReduce(&x, {});
  ASSERT_OK(work.status());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!(*work)->IsCompleted() && std::chrono::steady_clock::now() < deadline) Sleep(1);
  ASSERT_TRUE((*work)->IsCompleted());
  Sleep(80);
  ASSERT_OK((*work)->Wait());
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(x.ToVector()[0], static_cast<float>(t.comm.size()));
  const CommTime time = t.Take();
  // The 80 ms between the observed completion and the wait are in neither figure.
  EXPECT_LT(time.total_s, wall - 0.075);
  EXPECT_LE(time.exposed_s, time.total_s);
}

TEST(TimedCommunicatorTest, OpsInFlightTogetherCountOnce) {
  Timed t;
  ASSERT_OK(WaitFor(t.comm.Barrier({})));
  t.Take();
  const auto start = std::chrono::steady_clock::now();
  std::vector<Tensor> xs;
  std::vector<std::unique_ptr<Work>> works;
  for (int i = 0; i < 4; ++i) xs.push_back(Tensor::FromVector({1.0f}, {1}));
  for (Tensor& x : xs) {
    auto work = t.comm.AllReduce(&x, {});
    ASSERT_OK(work.status());
    works.push_back(std::move(*work));
  }
  Sleep(50);
  for (auto& work : works) ASSERT_OK(work->Wait());
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const CommTime time = t.Take();
  EXPECT_EQ(time.ops, 4);
  EXPECT_GE(time.total_s, 0.045);
  EXPECT_LE(time.total_s, wall) << "four overlapping ops, not four times the wall time";
}

TEST(TimedCommunicatorTest, KindsAreKeptApartAndTakeStartsAfresh) {
  Timed t;
  auto other = MpiCommunicator::World("x").Dup("ep");
  ASSERT_OK(other.status());
  TimedCommunicator ep(std::move(*other), t.timeline);
  EXPECT_EQ(ep.name(), "ep");
  EXPECT_EQ(ep.size(), t.comm.size());
  EXPECT_EQ(ep.world_ranks(), t.comm.world_ranks());
  ASSERT_OK(WaitFor(ep.Barrier({})));
  ASSERT_OK(WaitFor(ep.Barrier({})));
  ASSERT_OK(WaitFor(t.comm.Barrier({})));
  auto times = t.timeline->Take();
  ASSERT_OK(times.status());
  EXPECT_EQ(times->size(), 2u);
  EXPECT_EQ(times->at("ep").ops, 2);
  EXPECT_EQ(times->at("dp").ops, 1);
  auto again = t.timeline->Take();
  ASSERT_OK(again.status());
  EXPECT_TRUE(again->empty());
}

TEST(TimedCommunicatorTest, EveryOpPassesThroughAndErrorsComeBackUnchanged) {
  Timed t;
  const int rank = t.comm.rank(), size = t.comm.size();
  Tensor mine = Tensor::FromVector({static_cast<float>(rank)}, {1});
  Tensor all = Tensor::Zeros({size}, DType::kF32);
  ASSERT_OK(WaitFor(t.comm.AllGather(mine, &all, {})));
  for (int r = 0; r < size; ++r) EXPECT_EQ(all.ToVector()[r], static_cast<float>(r));
  Tensor shard = Tensor::Zeros({1}, DType::kF32);
  ASSERT_OK(WaitFor(t.comm.ReduceScatter(all, &shard, {})));
  EXPECT_EQ(shard.ToVector()[0], static_cast<float>(rank * size));
  Tensor b = Tensor::FromVector({static_cast<float>(rank + 7)}, {1});
  ASSERT_OK(WaitFor(t.comm.Broadcast(&b, {.root = 0})));
  EXPECT_EQ(b.ToVector()[0], 7.0f);
  const std::vector<int64_t> one(size, 1);
  Tensor rows = Tensor::Zeros({size, 1}, DType::kF32);
  ASSERT_OK(WaitFor(t.comm.AllToAllV(all.Reshape({size, 1}), one, &rows, one, {})));
  for (int r = 0; r < size; ++r) EXPECT_EQ(rows.ToVector()[r], static_cast<float>(rank));
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  Tensor got = Tensor::Zeros({1}, DType::kF32);
  auto recv = t.comm.Recv(&got, prev, {.tag = 5});
  ASSERT_OK(recv.status());
  ASSERT_OK(WaitFor(t.comm.Send(mine, next, {.tag = 5})));
  ASSERT_OK((*recv)->Wait());
  EXPECT_EQ(got.ToVector()[0], static_cast<float>(prev));
  EXPECT_EQ(t.comm.Broadcast(&b, {.root = size}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Take().ops, 7);  // the refused broadcast counts as issued
  EXPECT_EQ(Untimed(&t.comm), &t.comm.inner());
  EXPECT_EQ(Untimed(&t.comm.inner()), &t.comm.inner());
}

}  // namespace
}  // namespace moefold::parallel
