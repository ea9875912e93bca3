// Pipeline schedules against tables written out by hand (1F1B; interleaved in Megatron-LM's order),
// the in-flight bound for many sizes, freedom from deadlock when every rank runs its list in order,
// and the refusals.
#include "parallel/pipeline_schedule.h"

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

}  // namespace
}  // namespace moefold::parallel
