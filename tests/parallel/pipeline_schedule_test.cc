// Pipeline schedules against tables written out by hand (1F1B; interleaved in Megatron-LM's order),
// the in-flight bound for many sizes, freedom from deadlock when every rank runs its list in order,
// the refusals, and the point-to-point transfers: for every kind, pp ≤ 8, up to 4 chunks and 24
// micro-batches, the sends of each rank to another list the same messages in the same order as the
// other's receives, and the steps complete where each rank's transfers are served in issue order,
// a send only together with its receive (NCCL's unbatched send/recv on one stream) — which issuing
// in action order, as the executor used to, does not.
#include "parallel/pipeline_schedule.h"

#include <map>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

std::string Table(ScheduleKind kind, int pp, int stage, int micro, int chunks) {
  auto s = BuildSchedule(kind, pp, stage, micro, chunks);
  MF_CHECK(s.ok()) << s.status();
  return FormatSchedule(*s, chunks > 1);
}

TEST(PipelineScheduleTest, AllForwardAllBackward) {
  EXPECT_EQ(Table(ScheduleKind::kAllForwardAllBackward, 2, 1, 3, 1), "F0 F1 F2 B0 B1 B2");
}

TEST(PipelineScheduleTest, OneFOneBMatchesTheTextbook) {
  // pp 4, 8 micro-batches.
  EXPECT_EQ(Table(ScheduleKind::kOneFOneB, 4, 0, 8, 1),
            "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
  EXPECT_EQ(Table(ScheduleKind::kOneFOneB, 4, 1, 8, 1),
            "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7");
  EXPECT_EQ(Table(ScheduleKind::kOneFOneB, 4, 3, 8, 1),
            "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7");
  // Fewer micro-batches than stages: warm-up is cut short.
  EXPECT_EQ(Table(ScheduleKind::kOneFOneB, 4, 0, 2, 1), "F0 F1 B0 B1");
}

TEST(PipelineScheduleTest, InterleavedMatchesMegatronsOrder) {
  // pp 2, 2 chunks, 4 micro-batches: micro-batches go through the chunks in groups of pp.
  EXPECT_EQ(Table(ScheduleKind::kInterleaved, 2, 0, 4, 2),
            "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0");
  EXPECT_EQ(Table(ScheduleKind::kInterleaved, 2, 1, 4, 2),
            "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0");
}

TEST(PipelineScheduleTest, InFlightNeverExceedsTheBoundAndNothingDeadlocks) {
  for (ScheduleKind kind : {ScheduleKind::kAllForwardAllBackward, ScheduleKind::kOneFOneB,
                            ScheduleKind::kInterleaved}) {
    for (int pp = 1; pp <= 8; ++pp) {
      for (int chunks : kind == ScheduleKind::kInterleaved ? std::vector<int>{2, 3, 4}
                                                           : std::vector<int>{1}) {
        for (int micro = 1; micro <= 24; ++micro) {
          if (kind == ScheduleKind::kInterleaved && micro % pp != 0) continue;
          std::vector<std::vector<PipelineAction>> ranks;
          for (int stage = 0; stage < pp; ++stage) {
            auto s = BuildSchedule(kind, pp, stage, micro, chunks);
            ASSERT_OK(s);
            ASSERT_EQ(s->size(), static_cast<size_t>(2 * micro * chunks));
            EXPECT_LE(MaxInFlight(*s), InFlightBound(kind, pp, stage, micro, chunks))
                << ScheduleKindName(kind) << " pp " << pp << " stage " << stage << " m " << micro;
            ranks.push_back(*s);
          }
          const absl::Status run = SimulateSchedules(ranks, pp, chunks, micro);
          EXPECT_TRUE(run.ok()) << ScheduleKindName(kind) << " pp " << pp << " chunks " << chunks
                                << " m " << micro << ": " << run;
        }
      }
    }
  }
  // 1F1B holds pp − stage micro-batches, not all of them.
  auto s = BuildSchedule(ScheduleKind::kOneFOneB, 4, 0, 16, 1);
  EXPECT_EQ(MaxInFlight(*s), 4);
}

TEST(PipelineScheduleTest, TheSimulatorFindsADeadlock) {
  // Stage 1 backwards before its forwards: it waits for itself.
  const std::vector<PipelineAction> good = *BuildSchedule(ScheduleKind::kOneFOneB, 2, 0, 2, 1);
  const std::vector<PipelineAction> bad = {{PipelineAction::Type::kBackward, 0, 0},
                                           {PipelineAction::Type::kForward, 0, 0},
                                           {PipelineAction::Type::kForward, 1, 0},
                                           {PipelineAction::Type::kBackward, 1, 0}};
  const absl::Status st = SimulateSchedules({good, bad}, 2, 1, 2);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("rank 1 at B0.0"), std::string::npos) << st;
}

TEST(PipelineScheduleTest, BubbleFractionAndRefusals) {
  EXPECT_DOUBLE_EQ(BubbleFraction(4, 8, 1), 3.0 / 11.0);
  EXPECT_DOUBLE_EQ(BubbleFraction(4, 8, 2), 3.0 / 19.0);
  EXPECT_DOUBLE_EQ(BubbleFraction(1, 8, 1), 0.0);
  EXPECT_FALSE(BuildSchedule(ScheduleKind::kInterleaved, 2, 0, 3, 2).ok());  // 3 % 2
  EXPECT_FALSE(BuildSchedule(ScheduleKind::kInterleaved, 2, 0, 4, 1).ok());
  EXPECT_FALSE(BuildSchedule(ScheduleKind::kOneFOneB, 2, 0, 4, 2).ok());
  EXPECT_FALSE(BuildSchedule(ScheduleKind::kOneFOneB, 2, 2, 4, 1).ok());
  EXPECT_FALSE(ParseScheduleKind("gpipe").ok());
}

using Message = std::tuple<bool, int, int>;  // (backward, micro-batch, receiving virtual stage)

// Per ordered pair of ranks (from, to): the messages `from` sends to `to` in issue order, and those
// `to` receives from `from`.
struct PairSequences {
  std::map<std::pair<int, int>, std::vector<Message>> sends, receives;
};

PairSequences Pairs(const std::vector<std::vector<PipelineTransfer>>& transfers) {
  PairSequences pairs;
  for (int r = 0; r < static_cast<int>(transfers.size()); ++r) {
    for (const PipelineTransfer& t : transfers[r]) {
      const Message m{t.backward, t.micro, t.to_stage};
      if (t.send) {
        pairs.sends[{r, t.peer}].push_back(m);
      } else {
        pairs.receives[{t.peer, r}].push_back(m);
      }
    }
  }
  return pairs;
}

std::vector<std::vector<PipelineAction>> AllLists(ScheduleKind kind, int pp, int micro,
                                                  int chunks) {
  std::vector<std::vector<PipelineAction>> lists;
  for (int stage = 0; stage < pp; ++stage) {
    auto s = BuildSchedule(kind, pp, stage, micro, chunks);
    MF_CHECK(s.ok()) << s.status();
    lists.push_back(*s);
  }
  return lists;
}

// Each rank's transfers in the order of its actions: an action's receive just before it, its send
// just after (what the executor issued before transfers had a global order).
std::vector<std::vector<PipelineTransfer>> InActionOrder(
    const std::vector<std::vector<PipelineAction>>& lists, int pp, int chunks) {
  const int stages = pp * chunks;
  std::vector<std::vector<PipelineTransfer>> transfers(pp);
  for (int r = 0; r < pp; ++r) {
    for (const PipelineAction& a : lists[r]) {
      const int s = a.chunk * pp + r;
      const bool backward = a.type == PipelineAction::Type::kBackward;
      const int from = backward ? s + 1 : s - 1, to = backward ? s - 1 : s + 1;
      if (from >= 0 && from < stages)
        transfers[r].push_back({false, from % pp, backward, a.micro, s});
      if (to >= 0 && to < stages) transfers[r].push_back({true, to % pp, backward, a.micro, to});
    }
  }
  return transfers;
}

struct Sizes {
  ScheduleKind kind;
  int pp, chunks, micro;
};

// Every kind for pp 2..8, chunks 2..4 (interleaved), 1..24 micro-batches (a multiple of pp when
// interleaved).
std::vector<Sizes> AllSizes() {
  std::vector<Sizes> all;
  for (ScheduleKind kind : {ScheduleKind::kAllForwardAllBackward, ScheduleKind::kOneFOneB,
                            ScheduleKind::kInterleaved}) {
    for (int pp = 2; pp <= 8; ++pp) {
      for (int chunks :
           kind == ScheduleKind::kInterleaved ? std::vector<int>{2, 3, 4} : std::vector<int>{1}) {
        for (int micro = 1; micro <= 24; ++micro) {
          if (kind == ScheduleKind::kInterleaved && micro % pp != 0) continue;
          all.push_back({kind, pp, chunks, micro});
        }
      }
    }
  }
  return all;
}

std::string Name(const Sizes& z) {
  return absl::StrCat(ScheduleKindName(z.kind), " pp ", z.pp, " chunks ", z.chunks, " m ", z.micro);
}

TEST(PipelineTransfersTest, SendsMatchReceivesPairwiseAndNothingDeadlocksOnOneStream) {
  for (const Sizes& z : AllSizes()) {
    const auto lists = AllLists(z.kind, z.pp, z.micro, z.chunks);
    auto transfers = BuildTransfers(z.kind, z.pp, z.micro, z.chunks);
    ASSERT_OK(transfers);
    const PairSequences pairs = Pairs(*transfers);
    EXPECT_EQ(pairs.sends, pairs.receives) << Name(z);
    // Every message of the step once: (stages − 1) forward and as many backward per micro-batch.
    size_t count = 0;
    for (const auto& [pair, messages] : pairs.sends) count += messages.size();
    EXPECT_EQ(count, static_cast<size_t>(2 * (z.pp * z.chunks - 1) * z.micro)) << Name(z);
    const absl::Status run = SimulateTransfers(lists, *transfers, z.pp, z.chunks);
    EXPECT_TRUE(run.ok()) << Name(z) << ": " << run;
  }
}

TEST(PipelineTransfersTest, ActionOrderMatchesPairwiseButDeadlocksOnOneStream) {
  int deadlocks = 0;
  for (const Sizes& z : AllSizes()) {
    const auto lists = AllLists(z.kind, z.pp, z.micro, z.chunks);
    const auto transfers = InActionOrder(lists, z.pp, z.chunks);
    const PairSequences pairs = Pairs(transfers);
    EXPECT_EQ(pairs.sends, pairs.receives) << Name(z);
    deadlocks += SimulateTransfers(lists, transfers, z.pp, z.chunks).ok() ? 0 : 1;
  }
  EXPECT_GT(deadlocks, 0);
  // 1F1B, pp 2: rank 0 sends F1 before it receives B0's gradient, rank 1 sends that gradient
  // before it receives F1; on one stream each, both sends wait for receives queued behind them.
  const auto lists = AllLists(ScheduleKind::kOneFOneB, 2, 4, 1);
  const absl::Status st = SimulateTransfers(lists, InActionOrder(lists, 2, 1), 2, 1);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("deadlock"), std::string::npos) << st;
  EXPECT_NE(st.message().find("rank 0 at B0.0 waiting in s>1:F1@1"), std::string::npos) << st;
}

TEST(PipelineTransfersTest, TheSimulatorFindsAMismatch) {
  // Rank 0 sends F1 before F0: rank 1's first receive would get F1's data as F0's.
  const auto lists = AllLists(ScheduleKind::kOneFOneB, 2, 4, 1);
  auto transfers = *BuildTransfers(ScheduleKind::kOneFOneB, 2, 4, 1);
  ASSERT_EQ(FormatTransfer(transfers[0][0]), "s>1:F0@1");
  ASSERT_EQ(FormatTransfer(transfers[0][1]), "s>1:F1@1");
  std::swap(transfers[0][0], transfers[0][1]);
  const absl::Status st = SimulateTransfers(lists, transfers, 2, 1);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("mismatch"), std::string::npos) << st;
}

TEST(PipelineTransfersTest, OneFOneBOnTwoRanks) {
  // The global order lets each rank post its next receive before it sends: rank 1 receives F1
  // before sending B0's gradient, which rank 0 receives after sending F1.
  auto transfers = BuildTransfers(ScheduleKind::kOneFOneB, 2, 3, 1);
  ASSERT_OK(transfers);
  auto format = [](const std::vector<PipelineTransfer>& list) {
    std::vector<std::string> parts;
    for (const PipelineTransfer& t : list) parts.push_back(FormatTransfer(t));
    return absl::StrJoin(parts, " ");
  };
  EXPECT_EQ(format((*transfers)[0]), "s>1:F0@1 s>1:F1@1 r<1:B0@0 r<1:B1@0 s>1:F2@1 r<1:B2@0");
  EXPECT_EQ(format((*transfers)[1]), "r<0:F0@1 r<0:F1@1 s>0:B0@0 s>0:B1@0 r<0:F2@1 s>0:B2@0");
  EXPECT_TRUE(BuildTransfers(ScheduleKind::kOneFOneB, 1, 3, 1)->front().empty());
}

}  // namespace
}  // namespace moefold::parallel
