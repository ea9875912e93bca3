// `moefold report` on sample run directories: the page and each chart are well-formed XML, every
// section is there in order, the headline's numbers are those of metrics.jsonl, the per-rank
// traces merge into one track per rank, and what a run lacks is said, never a failure.
#include "report/report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "report/analysis.h"
#include "report/format.h"
#include "report/trace_merge.h"
#include "tests/report/report_testing.h"
#include "tests/testing/testing.h"

namespace moefold::report {
namespace {

using testing::ExpectedSections;
using testing::ReadFile;
using testing::SampleOptions;
using testing::SectionIds;
using testing::SvgBlocks;
using testing::TextById;
using testing::WriteSampleRun;
using testing::XmlError;

std::string RunDir(const std::string& name) { return "build/test-runs/report-" + name; }

// Writes the report of `dir` and returns the page.
std::string Report(const std::string& dir, const std::string& output = "") {
  absl::StatusOr<std::string> path = WriteReport(dir, output);
  EXPECT_TRUE(path.ok()) << path.status();
  return path.ok() ? ReadFile(*path) : "";
}

double MedianOfKey(const std::vector<nlohmann::json>& lines, const char* key) {
  std::vector<double> v;
  for (const auto& line : lines) v.push_back(line[key].get<double>());
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

void ExpectWellFormedWithEverySection(const std::string& page) {
  EXPECT_EQ(XmlError(page), "");
  EXPECT_EQ(SectionIds(page), ExpectedSections());
  const std::vector<std::string> svgs = SvgBlocks(page);
  for (size_t i = 0; i < svgs.size(); ++i) EXPECT_EQ(XmlError(svgs[i]), "") << "svg " << i;
  EXPECT_EQ(page.find("nan"), std::string::npos) << "a NaN reached the page";
  EXPECT_EQ(page.find("http://"), page.find("http://www.w3.org/"))
      << "the page refers to the network";
  EXPECT_EQ(page.find("<script"), std::string::npos);
}

TEST(ReportTest, SamplePageIsWellFormedWithEverySectionInOrder) {
  const std::string dir = RunDir("sample");
  WriteSampleRun(dir, {});
  const std::string page = Report(dir);
  ExpectWellFormedWithEverySection(page);
  // Loss, aux, grad norm, lr, MFU, tokens/s, phases, op families, memory, 2 expert layers,
  // stragglers.
  EXPECT_GE(SvgBlocks(page).size(), 12u);
  EXPECT_NE(page.find("sample_moe"), std::string::npos);
  EXPECT_NE(page.find("NVIDIA H100 80GB HBM3"), std::string::npos);
  EXPECT_NE(page.find("a &lt;b&gt; &amp; &#39;c&#39;"), std::string::npos) << "config escaped";
  EXPECT_NE(page.find("<details>"), std::string::npos);
}

TEST(ReportTest, HeadlineNumbersAreThoseOfTheMetrics) {
  const std::string dir = RunDir("numbers");
  WriteSampleRun(dir, {});
  const std::string page = Report(dir);
  const auto lines = testing::ReadJsonLines(dir + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 30u);
  double last10 = 0;
  for (size_t i = lines.size() - 10; i < lines.size(); ++i) {
    last10 += lines[i]["lm_loss"].get<double>() / 10;
  }
  EXPECT_EQ(TextById(page, "final-loss"), absl::StrFormat("%.4f", last10));
  EXPECT_EQ(TextById(page, "step-time"), FormatSeconds(MedianOfKey(lines, "step_time_s")));
  EXPECT_EQ(TextById(page, "mfu"), absl::StrFormat("%.2f%%", 100 * MedianOfKey(lines, "mfu")));
  EXPECT_EQ(TextById(page, "tokens-per-s-per-device"),
            FormatCount(MedianOfKey(lines, "tokens_per_s_per_device")));
  EXPECT_EQ(TextById(page, "steps"), "30");
  EXPECT_EQ(TextById(page, "slowest-rank"), "rank 2");
  EXPECT_NE(TextById(page, "where-time-goes").find("A step takes"), std::string::npos);
  EXPECT_NE(TextById(page, "top-sink").find("Largest sink of MFU"), std::string::npos);
  EXPECT_NE(TextById(page, "layout").find("(4 ranks)"), std::string::npos);
}

TEST(ReportTest, TracesMergeIntoATrackPerRankAndThePageLinksThem) {
  const std::string dir = RunDir("trace");
  WriteSampleRun(dir, {.world = 3});
  const std::string page = Report(dir);
  EXPECT_NE(page.find("href=\"trace.json\""), std::string::npos);
  const nlohmann::json trace = nlohmann::json::parse(ReadFile(dir + "/trace.json"));
  std::map<int, int> spans;
  std::map<int, std::string> names;
  for (const auto& event : trace["traceEvents"]) {
    const int pid = event["pid"].get<int>();
    EXPECT_LT(pid, 3) << "every pid is a rank: " << event.dump();
    if (event["ph"] == "X") ++spans[pid];
    if (event["ph"] == "M" && event["name"] == "process_name") {
      EXPECT_EQ(names.count(pid), 0u) << "one process name per rank";
      names[pid] = event["args"]["name"];
    }
  }
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(spans[r], 3) << "rank " << r;
    EXPECT_EQ(names[r], "rank " + std::to_string(r));
  }
}

TEST(ReportTest, AReportElsewhereLinksTheTraceRelativeToItself) {
  const std::string dir = RunDir("elsewhere");
  WriteSampleRun(dir, {.world = 2});
  std::filesystem::create_directories(RunDir("elsewhere-out"));
  const std::string page = Report(dir, RunDir("elsewhere-out") + "/r.html");
  EXPECT_NE(page.find("href=\"../report-elsewhere/trace.json\""), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir + "/report.html"));
}

TEST(ReportTest, AnOlderRunWithMetricsOnlyGetsEverySectionAndSaysWhatIsMissing) {
  const std::string dir = RunDir("old");
  const auto lines = WriteSampleRun(dir, {.lead_keys = false, .side_files = false});
  const std::string page = Report(dir);
  ExpectWellFormedWithEverySection(page);
  EXPECT_EQ(TextById(page, "mfu"), "—");
  EXPECT_EQ(TextById(page, "tokens-per-s-per-device"),
            FormatCount(MedianOfKey(lines, "tokens_per_s")));
  EXPECT_NE(TextById(page, "layout").find("world size not recorded"), std::string::npos);
  EXPECT_NE(TextById(page, "stragglers").find("not recorded"), std::string::npos);
  EXPECT_NE(TextById(page, "ops").find("not recorded"), std::string::npos);
  EXPECT_NE(TextById(page, "config").find("not recorded"), std::string::npos);
  EXPECT_NE(TextById(page, "environment").find("not recorded"), std::string::npos);
  // Without forward/backward the model phase is shown whole.
  EXPECT_NE(TextById(page, "where-time-goes").find("forward and backward"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir + "/trace.json"));
}

TEST(ReportTest, AnEmptyDirectoryStillGetsAPageAndAMissingOneIsNotFound) {
  const std::string dir = RunDir("empty");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string page = Report(dir);
  ExpectWellFormedWithEverySection(page);
  EXPECT_NE(page.find("metrics.jsonl is missing"), std::string::npos);
  const auto missing = WriteReport(RunDir("no-such-dir"), "");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(ReportTest, ATornLastLineIsSkippedAndNamed) {
  const std::string dir = RunDir("torn");
  WriteSampleRun(dir, {.side_files = false});
  {
    std::ofstream out(dir + "/metrics.jsonl", std::ios::app);
    out << "{\"step\": 30, \"loss\": 2.";
  }
  absl::StatusOr<RunData> run = ReadRunDir(dir);
  ASSERT_OK(run);
  EXPECT_EQ(run->steps.size(), 30u);
  ASSERT_EQ(run->notes.size(), 1u);
  EXPECT_NE(run->notes[0].find("metrics.jsonl line 31"), std::string::npos) << run->notes[0];
  ExpectWellFormedWithEverySection(Report(dir));
}

TEST(ReportTest, DroppedTokensAreCountedAndCharted) {
  const std::string dir = RunDir("dropped");
  WriteSampleRun(dir, {.dropped_per_step = 5});
  const std::string page = Report(dir);
  // Odd steps drop 5 tokens: 15 of 30 steps.
  EXPECT_EQ(TextById(page, "tokens-dropped"), "75 tokens dropped over the run (over capacity).");
  EXPECT_NE(page.find("Tokens dropped per step"), std::string::npos);
}

TEST(ReportTest, RestartsAndVerificationMismatchesAreListed) {
  const std::string quiet = RunDir("reliability-quiet");
  WriteSampleRun(quiet, {});
  const std::string plain = Report(quiet);
  EXPECT_EQ(TextById(plain, "restarts"),
            "No restart: the run was not restarted by moefold launch (no restarts.jsonl).");
  EXPECT_EQ(TextById(plain, "verification"), "No step was verified (train.verify_every is 0).");

  const std::string dir = RunDir("reliability");
  WriteSampleRun(dir, {.verify_every = 5, .mismatch_step = 14, .mismatch_rank = 3, .restarts = 2});
  const std::string page = Report(dir);
  EXPECT_EQ(XmlError(page), "");
  // Steps 4, 9, ..., 29 verified; step 14 differed on rank 3.
  EXPECT_EQ(TextById(page, "verification"),
            "6 step(s) re-run for verification; 1 with a rank whose re-run differed (a silent data "
            "corruption suspect):");
  const std::string section = page.substr(page.find("<section id=\"reliability\""));
  EXPECT_NE(section.find("<td class=\"num\">14</td><td>3</td>"), std::string::npos) << section.substr(0, 2000);
  EXPECT_EQ(TextById(page, "restarts"), "2 restart(s) by moefold launch:");
  EXPECT_NE(section.find("killed by signal 9 (Killed)"), std::string::npos);
  EXPECT_NE(section.find("4.5 s"), std::string::npos);            // the first resumed
  EXPECT_NE(section.find("never resumed"), std::string::npos);    // the second did not
  EXPECT_NE(section.find(dir + "/ck/step-000000018"), std::string::npos);
}

TEST(ReportTest, AResumedRunKeepsTheLastLineOfARedoneStep) {
  const std::string dir = RunDir("resumed");
  auto lines = WriteSampleRun(dir, {.steps = 5, .side_files = false});
  {
    std::ofstream out(dir + "/metrics.jsonl", std::ios::app);
    nlohmann::json redo = lines[4];
    redo["lm_loss"] = 1.25;
    out << redo.dump() << "\n";
  }
  absl::StatusOr<RunData> run = ReadRunDir(dir);
  ASSERT_OK(run);
  ASSERT_EQ(run->steps.size(), 5u);
  EXPECT_EQ(run->steps[4].lm_loss, 1.25);
}

TEST(ReportTest, ALargeModelAndALongRunKeepThePageSmall) {
  // 12 MoE layers of 256 experts over 5000 steps.
  RunData run;
  run.run_dir = "large";
  for (int step = 0; step < 5000; ++step) {
    StepRecord s;
    s.step = step;
    s.lm_loss = 3 + 1.0 / (1 + step);
    s.step_time_s = 1;
    s.expert_tokens.assign(12, std::vector<double>(256, 100.0 + step % 7));
    run.steps.push_back(std::move(s));
  }
  const std::string page = RenderReport(run, "");
  EXPECT_EQ(XmlError(page), "");
  EXPECT_LT(page.size(), 4u << 20) << "bytes";
  EXPECT_NE(page.find("8 of 12 MoE layers shown"), std::string::npos);
  EXPECT_NE(page.find("MoE layer 11"), std::string::npos) << "the last layer is among them";
}

TEST(TraceMergeTest, RefusesFilesThatAreNotRankTraces) {
  const std::string dir = RunDir("bad-trace");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir + "/rank-00000.json") << "{\"events\": []}";
    std::ofstream(dir + "/other.json") << "{\"traceEvents\": []}";
    std::ofstream(dir + "/rank-00001.json") << "[{\"ph\": \"X\", \"pid\": 9, \"ts\": 0}]";
  }
  auto not_trace = MergeTraces({dir + "/rank-00000.json"}, dir + "/trace.json");
  EXPECT_EQ(not_trace.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(not_trace.status().message().find("rank-00000.json"), std::string::npos);
  auto unnamed = MergeTraces({dir + "/other.json"}, dir + "/trace.json");
  EXPECT_EQ(unnamed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MergeTraces({}, dir + "/trace.json").status().code(), absl::StatusCode::kNotFound);
  // A bare event array is a trace too.
  auto array = MergeTraces({dir + "/rank-00001.json"}, dir + "/trace.json");
  ASSERT_OK(array);
  EXPECT_EQ(array->ranks, 1);
  EXPECT_EQ(array->events, 1);
}

TEST(AnalysisTest, MedianAndFinalLoss) {
  EXPECT_EQ(Median({3, 1, 2}), 2);
  EXPECT_EQ(Median({4, 1, 2, 3}), 2.5);
  EXPECT_EQ(Median({kNotRecorded, 5}), 5);
  EXPECT_TRUE(std::isnan(Median({})));
  std::vector<StepRecord> steps(12);
  for (int i = 0; i < 12; ++i) steps[i].lm_loss = i;
  EXPECT_DOUBLE_EQ(FinalLoss(steps), 6.5);  // mean of 2..11
}

TEST(AnalysisTest, BreakdownAddsUpToTheStepAndSplitsCommunication) {
  StepRecord s;
  s.step_time_s = 1.0;
  s.data_s = 0.1;
  s.model_s = 0.6;
  s.update_s = 0.1;
  s.comm_s = {{"dp-cp", 0.3}, {"ep", 0.1}};
  s.comm_exposed_s = {{"dp-cp", 0.1}, {"ep", 0.1}};
  Breakdown b = StepBreakdown(s);
  EXPECT_FALSE(b.forward_backward_split);
  EXPECT_DOUBLE_EQ(b.forward, 0.4);  // model − exposed
  EXPECT_DOUBLE_EQ(b.ExposedTotal(), 0.2);
  EXPECT_DOUBLE_EQ(b.overlapped["dp-cp"], 0.2);
  EXPECT_DOUBLE_EQ(b.overlapped["ep"], 0.0);
  EXPECT_NEAR(b.idle, 0.2, 1e-12);
  EXPECT_NEAR(b.Compute() + b.data + b.ExposedTotal() + b.idle, b.step, 1e-12);
  s.forward_s = 0.2;
  s.backward_s = 0.3;
  b = StepBreakdown(s);
  EXPECT_TRUE(b.forward_backward_split);
  EXPECT_NEAR(b.idle, 0.1, 1e-12);
  // Phases that overrun the step leave no negative idle.
  s.step_time_s = 0.5;
  EXPECT_EQ(StepBreakdown(s).idle, 0);
}

TEST(AnalysisTest, TopSinksSkipGemmsAndAttentionAndComeLargestFirst) {
  RunData run;
  ProfileRecord p;
  p.step_ms = 100;
  p.unattributed_ms = 4;
  p.family_ms = {{"gemm", 50}, {"attention", 20}, {"permute", 9}, {"norm", 2}, {"router", 0}};
  run.profiles = {p};
  StepRecord s;
  s.step_time_s = 0.1;
  s.data_s = 0.001;
  s.model_s = 0.09;
  s.update_s = 0.005;
  s.comm_s = {{"ep", 0.02}};
  s.comm_exposed_s = {{"ep", 0.012}};
  run.steps = {s};
  const std::vector<Sink> sinks = TopSinks(run, 3);
  ASSERT_EQ(sinks.size(), 3u);
  EXPECT_EQ(sinks[0].name, "exposed ep communication");
  EXPECT_NEAR(sinks[0].share, 0.12, 1e-9);
  EXPECT_EQ(sinks[1].name, "permute kernels");
  EXPECT_EQ(sinks[2].name, "unattributed device time (idle or unscoped work)");
  const std::vector<OpRow> ops = OpTable(run.profiles);
  EXPECT_EQ(ops.front().family, "gemm");
  EXPECT_EQ(ops.back().family, "unattributed");
  EXPECT_EQ(ops.size(), 5u);  // router (0 ms, 0 calls) left out
}

TEST(AnalysisTest, PerRankFigures) {
  std::vector<StepRecord> steps(3);
  steps[0].rank_step_time_s = {1, 2};
  steps[1].rank_step_time_s = {3, 4};
  steps[2].rank_step_time_s = {5, 9};
  steps[0].rank_device_peak_bytes = {10, 20};
  steps[2].rank_device_peak_bytes = {30, 5};
  EXPECT_EQ(RankMedianStepTimes(steps), (std::vector<double>{3, 4}));
  EXPECT_EQ(RankPeakBytes(steps), (std::vector<double>{30, 20}));
  std::vector<StepRecord> old(2);
  old[0].device_peak_bytes = 7;
  old[1].device_peak_bytes = 8;
  EXPECT_EQ(RankPeakBytes(old), (std::vector<double>{8}));
}

}  // namespace
}  // namespace moefold::report
