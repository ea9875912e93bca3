// `moefold report` through the binary on a REAL short run: two ranks under mpirun train the tiny
// MoE for a few steps (one profiled, two traced), then the report of that run directory is a
// well-formed page with every section, its headline equal to metrics.jsonl, every chart an XML
// document, and the run's per-rank traces merge into one trace with a track per rank.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/testing/run_command.h"
#include "tests/report/report_testing.h"

namespace moefold::report {
namespace {

using testing::ReadFile;
using testing::ReadJsonLines;
using testing::TextById;
using testing::XmlError;

using Result = moefold::testing::CommandResult;
using moefold::testing::RunCommand;

// The seconds formatting of the page (report/format.h FormatSeconds), restated.
std::string Seconds(double s) {
  if (s < 1e-3) return absl::StrFormat("%.1f µs", s * 1e6);
  if (s < 1) return absl::StrFormat("%.1f ms", s * 1e3);
  return absl::StrFormat("%.3g s", s);
}

TEST(ReportCliTest, ReportOfARealTwoRankRun) {
  const std::string dir = "build/test-runs/report-real-dp2";
  std::filesystem::remove_all(dir);
  const Result train = RunCommand(
      moefold::testing::MpirunPrefix(2) + MOEFOLD_BINARY +
      " train --config configs/tiny_moe.yaml --set train.steps=6"
      " --set optimizer.warmup_steps=2 --set data.cache_dir=build/test-data"
      " --set logging.profile_steps=[3] --set logging.trace_steps=2-3"
      " --set checkpoint.dir=" +
      dir + "/checkpoints --run-dir " + dir);
  ASSERT_EQ(train.exit_code, 0) << train.output;

  const Result report = RunCommand(std::string(MOEFOLD_BINARY) + " report " + dir);
  ASSERT_EQ(report.exit_code, 0) << report.output;
  EXPECT_EQ(report.output, dir + "/report.html\n");
  const std::string page = ReadFile(dir + "/report.html");
  EXPECT_EQ(XmlError(page), "");
  EXPECT_EQ(testing::SectionIds(page), testing::ExpectedSections());
  const std::vector<std::string> svgs = testing::SvgBlocks(page);
  EXPECT_GE(svgs.size(), 8u);
  for (size_t i = 0; i < svgs.size(); ++i) EXPECT_EQ(XmlError(svgs[i]), "") << "svg " << i;

  const auto lines = ReadJsonLines(dir + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 6u);
  double last = 0;
  std::vector<double> times;
  for (const auto& line : lines) {
    last += line["lm_loss"].get<double>() / 6;  // fewer than 10 steps: the mean of all
    times.push_back(line["step_time_s"].get<double>());
  }
  std::sort(times.begin(), times.end());
  EXPECT_EQ(TextById(page, "final-loss"), absl::StrFormat("%.4f", last));
  EXPECT_EQ(TextById(page, "step-time"), Seconds((times[2] + times[3]) / 2));
  EXPECT_EQ(TextById(page, "steps"), "6");
  // The profiled step's op families are in the table.
  EXPECT_NE(TextById(page, "ops").find("expert_gemm"), std::string::npos);

  // The run traced steps 2-3 on both ranks: the merged trace has a track per rank.
  ASSERT_TRUE(std::filesystem::is_directory(dir + "/trace"));
  const nlohmann::json trace = nlohmann::json::parse(ReadFile(dir + "/trace.json"));
  std::set<int> ranks;
  for (const auto& event : trace["traceEvents"]) {
    if (event.value("ph", "") != "M") ranks.insert(event["pid"].get<int>());
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1}));
  EXPECT_NE(page.find("href=\"trace.json\""), std::string::npos);
  // The trainer's MFU (against the CPU probe) reaches the headline.
  EXPECT_NE(page.find("cpu gemm probe"), std::string::npos);
}

TEST(ReportCliTest, UsageErrorsAndAMissingRunDirectory) {
  EXPECT_EQ(RunCommand(std::string(MOEFOLD_BINARY) + " report").exit_code, 2);
  EXPECT_EQ(RunCommand(std::string(MOEFOLD_BINARY) + " report a b").exit_code, 2);
  EXPECT_EQ(RunCommand(std::string(MOEFOLD_BINARY) + " report x --bogus 1").exit_code, 2);
  const Result missing =
      RunCommand(std::string(MOEFOLD_BINARY) + " report build/test-runs/no-such-run");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("build/test-runs/no-such-run does not exist"), std::string::npos)
      << missing.output;
  const Result help = RunCommand(std::string(MOEFOLD_BINARY) + " report --help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("usage: moefold report RUN_DIR"), std::string::npos);
}

}  // namespace
}  // namespace moefold::report
