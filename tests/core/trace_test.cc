// The tracer on its own: which steps it records, the file's Chrome trace shape (metadata, tracks,
// arguments), lanes that keep overlapping spans of a track nested, checkpoint spans from another
// thread, the profiler's scopes as gpu spans, and the file of a run that stops early.
#include "core/trace.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/testing/testing.h"
#include "tests/testing/trace_testing.h"

namespace moefold {
namespace {

using Clock = Tracer::Clock;
using testing::ParsedTrace;
using testing::ReadTrace;
using testing::TraceEvent;
using testing::TraceProblems;

class TraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("moefold-trace-" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
             std::to_string(::getpid())))
               .string();
    std::filesystem::remove_all(dir_);
    path_ = dir_ + "/trace/rank-00003.json";
  }
  void TearDown() override {
    Tracer::Get().Disable();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  static void Sleep(double ms) {
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
  }

  static std::vector<const TraceEvent*> Named(const ParsedTrace& t, const std::string& name) {
    std::vector<const TraceEvent*> out;
    for (const TraceEvent& e : t.spans) {
      if (e.name == name) out.push_back(&e);
    }
    return out;
  }

  std::string dir_, path_;
};

TEST_F(TraceTest, RecordsOnlyTheTracedStepsAndWritesAfterTheLast) {
  Tracer& tracer = Tracer::Get();
  tracer.Configure(path_, /*rank=*/3, /*world_size=*/4, /*first=*/1, /*last=*/2);
  EXPECT_FALSE(tracer.BeginStep(0));
  EXPECT_FALSE(tracer.enabled());
  { TraceSpan span(TraceTrack::kHost, "untraced"); }
  ASSERT_OK(tracer.EndStep());
  for (int64_t step : {1, 2}) {
    EXPECT_TRUE(tracer.BeginStep(step));
    EXPECT_TRUE(tracer.enabled());
    {
      TraceSpan outer(TraceTrack::kHost, "data loading", {{"micro_batches", int64_t{2}}});
      Sleep(1);
      TraceSpan inner(TraceTrack::kHost, "inner", {{"ratio", 0.5}, {"kind", std::string("x")}});
      Sleep(1);
    }
    EXPECT_FALSE(std::filesystem::exists(path_)) << "written before the last traced step";
    ASSERT_OK(tracer.EndStep());
    EXPECT_FALSE(tracer.enabled());
  }
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_FALSE(tracer.BeginStep(3));  // after the range, and written: nothing more
  { TraceSpan span(TraceTrack::kHost, "late"); }
  ASSERT_OK(tracer.EndStep());
  ASSERT_OK(tracer.Flush());

  const ParsedTrace t = ReadTrace(path_);
  ASSERT_TRUE(t.ok);
  EXPECT_EQ(t.process_name, "rank 3");
  EXPECT_EQ(t.other_data["rank"], 3);
  EXPECT_EQ(t.other_data["world_size"], 4);
  EXPECT_EQ(t.other_data["trace_steps"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(t.thread_names.at(1), "host");
  EXPECT_TRUE(Named(t, "untraced").empty());
  EXPECT_TRUE(Named(t, "late").empty());
  ASSERT_EQ(Named(t, "step 1").size(), 1u);
  ASSERT_EQ(Named(t, "step 2").size(), 1u);
  EXPECT_EQ(Named(t, "step 2")[0]->args["step"], 2);
  const auto loading = Named(t, "data loading");
  ASSERT_EQ(loading.size(), 2u);
  EXPECT_EQ(loading[0]->args["micro_batches"], 2);
  EXPECT_EQ(loading[0]->pid, 3);
  EXPECT_EQ(loading[0]->tid, 1);
  EXPECT_EQ(loading[0]->track, "host");
  EXPECT_GE(loading[0]->dur, 1500.0);  // µs
  const auto inner = Named(t, "inner");
  ASSERT_EQ(inner.size(), 2u);
  EXPECT_EQ(inner[0]->args["ratio"], 0.5);
  EXPECT_EQ(inner[0]->args["kind"], "x");
  for (const std::string& p : TraceProblems(t.spans)) ADD_FAILURE() << p;
}

// Collectives in flight together overlap without nesting: the second goes to a lane of its own,
// and spans recorded out of order (at their completion) still nest in their lane.
TEST_F(TraceTest, OverlappingSpansOfATrackGoToSeparateLanes) {
  Tracer& tracer = Tracer::Get();
  tracer.Configure(path_, 0, 1, 0, 0);
  ASSERT_TRUE(tracer.BeginStep(0));
  const Clock::time_point t0 = Clock::now();
  auto at = [&](int us) { return t0 + std::chrono::microseconds(us); };
  const std::vector<int64_t> peers = {0, 1};
  tracer.Add(TraceTrack::kComm, "all_reduce", at(10), at(50),
             {{"group", std::string("dp-cp")}, {"bytes", int64_t{4096}}, {"peers", peers}});
  tracer.Add(TraceTrack::kComm, "all_to_all_v", at(40), at(80), {{"group", std::string("ep")}});
  tracer.Add(TraceTrack::kComm, "send", at(20), at(30));     // inside the all-reduce
  tracer.Add(TraceTrack::kComm, "barrier", at(60), at(70));  // after it, inside the all-to-all
  Sleep(0.2);
  ASSERT_OK(tracer.EndStep());
  const ParsedTrace t = ReadTrace(path_);
  ASSERT_TRUE(t.ok);
  for (const std::string& p : TraceProblems(t.spans)) ADD_FAILURE() << p;
  const int comm = Named(t, "all_reduce")[0]->tid;
  EXPECT_EQ(t.thread_names.at(comm), "comm");
  EXPECT_EQ(Named(t, "send")[0]->tid, comm);
  EXPECT_EQ(Named(t, "barrier")[0]->tid, comm);
  const int second = Named(t, "all_to_all_v")[0]->tid;
  EXPECT_NE(second, comm);
  EXPECT_EQ(t.thread_names.at(second), "comm 2");
  const TraceEvent& all_reduce = *Named(t, "all_reduce")[0];
  EXPECT_EQ(all_reduce.args["group"], "dp-cp");
  EXPECT_EQ(all_reduce.args["bytes"], 4096);
  EXPECT_EQ(all_reduce.args["peers"], nlohmann::json::array({0, 1}));
  EXPECT_NEAR(all_reduce.dur, 40.0, 1e-3);
}

// The writer thread's spans count between the traced steps too (a background save overlaps the
// next step); host spans outside an open step do not.
TEST_F(TraceTest, CheckpointSpansComeFromTheirThreadBetweenSteps) {
  Tracer& tracer = Tracer::Get();
  tracer.Configure(path_, 1, 2, 1, 2);
  EXPECT_FALSE(tracer.collecting());
  { TraceSpan before(TraceTrack::kCheckpoint, "checkpoint write"); }  // not yet collecting
  ASSERT_TRUE(tracer.BeginStep(1));
  ASSERT_OK(tracer.EndStep());
  EXPECT_TRUE(tracer.collecting());
  std::thread writer([] {
    TraceSpan span(TraceTrack::kCheckpoint, "checkpoint write", {{"bytes", int64_t{100}}});
    Sleep(1);
  });
  { TraceSpan between(TraceTrack::kHost, "between steps"); }
  writer.join();
  ASSERT_TRUE(tracer.BeginStep(2));
  ASSERT_OK(tracer.EndStep());
  EXPECT_FALSE(tracer.collecting());
  const ParsedTrace t = ReadTrace(path_);
  ASSERT_TRUE(t.ok);
  const auto writes = Named(t, "checkpoint write");
  ASSERT_EQ(writes.size(), 1u);
  EXPECT_EQ(writes[0]->args["bytes"], 100);
  EXPECT_EQ(t.thread_names.at(writes[0]->tid), "checkpoint");
  EXPECT_TRUE(Named(t, "between steps").empty());
  for (const std::string& p : TraceProblems(t.spans)) ADD_FAILURE() << p;
}

TEST_F(TraceTest, ProfileScopesBecomeGpuSpans) {
  Tracer& tracer = Tracer::Get();
  tracer.Configure(path_, 0, 1, 0, 0);
  ASSERT_TRUE(tracer.BeginStep(0));
  StepProfile profile;
  profile.host_begin = Clock::now();
  profile.step_ms = 3;
  profile.spans = {{0.5, 1.0, static_cast<int>(OpFamily::kGemm), 3},
                   {0.25, 2.0, static_cast<int>(OpFamily::kAttention), 3},
                   {2.0, 3.0, static_cast<int>(OpFamily::kOptimizer), -1}};
  tracer.AddProfile(profile);
  Sleep(4);
  ASSERT_OK(tracer.EndStep());
  const ParsedTrace t = ReadTrace(path_);
  ASSERT_TRUE(t.ok);
  for (const std::string& p : TraceProblems(t.spans)) ADD_FAILURE() << p;
  ASSERT_EQ(Named(t, "gemm L3").size(), 1u);
  const TraceEvent& gemm = *Named(t, "gemm L3")[0];
  const TraceEvent& attention = *Named(t, "attention L3")[0];
  const TraceEvent& optimizer = *Named(t, "optimizer")[0];
  EXPECT_EQ(gemm.track, "gpu");
  EXPECT_EQ(t.thread_names.at(gemm.tid), "gpu");
  EXPECT_EQ(gemm.tid, attention.tid);  // nested: one lane
  EXPECT_EQ(gemm.args["family"], "gemm");
  EXPECT_EQ(gemm.args["layer"], 3);
  EXPECT_EQ(optimizer.args["layer"], -1);
  EXPECT_NEAR(gemm.ts - attention.ts, 250.0, 1e-2);
  EXPECT_NEAR(gemm.dur, 500.0, 1e-2);
}

// A run that ends before its last traced step (or fails in one) still leaves its trace: Flush
// writes what was recorded; a failed step keeps its spans, not its step span.
TEST_F(TraceTest, FlushWritesARunThatStoppedEarly) {
  Tracer& tracer = Tracer::Get();
  tracer.Configure(path_, 0, 1, 0, 100);
  ASSERT_OK(tracer.Flush());  // nothing recorded yet: no file
  EXPECT_FALSE(std::filesystem::exists(path_));
  ASSERT_TRUE(tracer.BeginStep(0));
  ASSERT_OK(tracer.EndStep());
  ASSERT_TRUE(tracer.BeginStep(1));
  { TraceSpan span(TraceTrack::kHost, "failing phase"); }
  ASSERT_OK(tracer.Flush());
  EXPECT_FALSE(tracer.enabled());
  const ParsedTrace t = ReadTrace(path_);
  ASSERT_TRUE(t.ok);
  EXPECT_EQ(Named(t, "step 0").size(), 1u);
  EXPECT_TRUE(Named(t, "step 1").empty());
  EXPECT_EQ(Named(t, "failing phase").size(), 1u);
  ASSERT_OK(tracer.Flush());  // once only
}

TEST_F(TraceTest, DisabledRecordsNothing) {
  Tracer& tracer = Tracer::Get();
  tracer.Disable();
  EXPECT_FALSE(tracer.BeginStep(0));
  EXPECT_FALSE(tracer.enabled());
  EXPECT_FALSE(tracer.accepts(TraceTrack::kCheckpoint));
  ASSERT_OK(tracer.EndStep());
  ASSERT_OK(tracer.Flush());
  EXPECT_TRUE(tracer.path().empty());
}

TEST_F(TraceTest, AnUnwritableDirectoryIsAnError) {
  Tracer& tracer = Tracer::Get();
  std::filesystem::create_directories(dir_);
  const std::string file = dir_ + "/file";
  { std::ofstream(file) << "x"; }
  tracer.Configure(file + "/trace/rank-00000.json", 0, 1, 0, 0);
  ASSERT_TRUE(tracer.BeginStep(0));
  const absl::Status status = tracer.EndStep();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("trace of rank 0"), std::string::npos) << status;
}

// The checker the trace tests rely on finds what it must: a partial overlap in a lane, a span
// outside every step, a negative duration; nested and disjoint spans pass.
TEST(TraceProblemsTest, FindsOverlapsAndSpansOutsideSteps) {
  auto span = [](const char* name, const char* track, int tid, double ts, double dur) {
    TraceEvent e;
    e.name = name;
    e.track = track;
    e.tid = tid;
    e.ts = ts;
    e.dur = dur;
    return e;
  };
  const std::vector<TraceEvent> good = {
      span("step 1", "host", 1, 0, 100),  span("a", "host", 1, 10, 50),
      span("b", "host", 1, 20, 10),       span("c", "host", 1, 70, 30),
      span("x", "comm", 3, 10, 60),       span("y", "comm", 301, 50, 20),
      span("w", "checkpoint", 4, 90, 500)};
  EXPECT_TRUE(TraceProblems(good).empty());
  std::vector<TraceEvent> overlap = good;
  overlap.push_back(span("d", "host", 1, 55, 10));  // starts in a, ends after it
  ASSERT_EQ(TraceProblems(overlap).size(), 1u);
  EXPECT_NE(TraceProblems(overlap)[0].find("partial overlap: \"d\""), std::string::npos);
  std::vector<TraceEvent> outside = good;
  outside.push_back(span("late", "gpu", 2, 95, 10));
  ASSERT_EQ(TraceProblems(outside).size(), 1u);
  EXPECT_NE(TraceProblems(outside)[0].find("outside every step: \"late\""), std::string::npos);
  std::vector<TraceEvent> negative = good;
  negative.push_back(span("n", "host", 7, 50, -1));
  EXPECT_FALSE(TraceProblems(negative).empty());
}

}  // namespace
}  // namespace moefold
