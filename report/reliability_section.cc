// The report's reliability section: the restarts `moefold launch` made (restarts.jsonl) and the
// steps train.verify_every re-ran, with the ranks whose re-run disagreed.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "report/format.h"
#include "report/sections.h"

namespace moefold::report {
namespace {

// A restarts.jsonl field as table text ("—" when absent).
std::string Field(const Json& line, const char* key) {
  const auto it = line.find(key);
  if (it == line.end() || it->is_null()) return "—";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_float()) return FormatNumber(it->get<double>());
  return it->dump();
}

std::string RestartsPart(const RunData& run) {
  if (run.restarts.empty()) {
    return "<p id=\"restarts\">No restart: the run was not restarted by <code>moefold "
           "launch</code> (no restarts.jsonl).</p>";
  }
  std::vector<std::vector<std::string>> rows;
  for (const Json& r : run.restarts) {
    // time_to_resume_s −1: the restarted job never logged a step.
    const auto resume = r.find("time_to_resume_s");
    const bool never = resume != r.end() && resume->is_number() && resume->get<double>() < 0;
    rows.push_back({Field(r, "restart"), Field(r, "cause"), Field(r, "steps_done"),
                    Field(r, "checkpoint"), Field(r, "resume_step"), Field(r, "steps_lost"),
                    never ? "never resumed"
                          : (resume == r.end() ? "—" : FormatSeconds(resume->get<double>()))});
  }
  return absl::StrCat(
      "<p id=\"restarts\">", run.restarts.size(),
      " restart(s) by <code>moefold launch</code>:</p>",
      HtmlTable({"restart", "cause", "steps done", "from checkpoint", "resume step", "steps lost",
                 "time to resume"},
                rows, {true, false, true, false, true, true, true}));
}

std::string VerificationPart(const RunData& run) {
  int verified = 0;
  std::vector<std::vector<std::string>> mismatches;
  for (const StepRecord& s : run.steps) {
    if (!std::isfinite(s.verify_s) || s.verify_s <= 0) continue;
    ++verified;
    if (s.verify_mismatch_ranks.empty()) continue;
    std::vector<std::string> ranks;
    for (double r : s.verify_mismatch_ranks) ranks.push_back(absl::StrCat(std::llround(r)));
    mismatches.push_back({absl::StrCat(s.step), absl::StrJoin(ranks, ", ")});
  }
  if (verified == 0) {
    return "<p id=\"verification\">No step was verified (train.verify_every is 0).</p>";
  }
  if (mismatches.empty()) {
    return absl::StrCat("<p id=\"verification\">", verified,
                        " step(s) re-run for verification; every rank agreed with itself.</p>");
  }
  return absl::StrCat("<p id=\"verification\">", verified,
                      " step(s) re-run for verification; ", mismatches.size(),
                      " with a rank whose re-run differed (a silent data corruption suspect):</p>",
                      HtmlTable({"step", "ranks that differed"}, mismatches, {true, false}));
}

}  // namespace

std::string ReliabilitySection(const RunData& run) {
  return Section("reliability", "Restarts and verification",
                 RestartsPart(run) + VerificationPart(run));
}

}  // namespace moefold::report
