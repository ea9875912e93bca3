// Trace checks: nesting per lane by a sweep over spans sorted by start, with a stack of the open
// ones; 1 ns of slack for the µs decimals of the file.
#include "tests/testing/trace_testing.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "gtest/gtest.h"

namespace moefold::testing {
namespace {

constexpr double kSlackUs = 1e-3;

std::string Describe(const TraceEvent& e) {
  std::ostringstream out;
  out << "\"" << e.name << "\" (pid " << e.pid << ", tid " << e.tid << ", " << e.ts << " + "
      << e.dur << " µs)";
  return out.str();
}

}  // namespace

ParsedTrace ReadTrace(const std::string& path) {
  ParsedTrace trace;
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "no trace file " << path;
    return trace;
  }
  nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object() || !json.contains("traceEvents") ||
      !json["traceEvents"].is_array()) {
    ADD_FAILURE() << path << " is not a Chrome trace object";
    return trace;
  }
  EXPECT_EQ(json.value("displayTimeUnit", ""), "ms") << path;
  trace.other_data = json.value("otherData", nlohmann::json::object());
  for (const nlohmann::json& e : json["traceEvents"]) {
    const std::string ph = e.value("ph", "");
    if (ph == "M") {
      if (e.value("name", "") == "thread_name") {
        trace.thread_names[e.value("tid", -1)] = e["args"].value("name", "");
      } else if (e.value("name", "") == "process_name") {
        trace.process_name = e["args"].value("name", "");
      }
      continue;
    }
    EXPECT_EQ(ph, "X") << path << ": " << e.dump();
    TraceEvent span;
    span.name = e.value("name", "");
    span.track = e.value("cat", "");
    span.pid = e.value("pid", -1);
    span.tid = e.value("tid", -1);
    span.ts = e.value("ts", -1.0);
    span.dur = e.value("dur", -1.0);
    span.args = e.value("args", nlohmann::json::object());
    trace.spans.push_back(std::move(span));
  }
  trace.ok = true;
  return trace;
}

std::vector<std::string> TraceProblems(const std::vector<TraceEvent>& spans) {
  std::vector<std::string> problems;
  std::map<std::pair<int, int>, std::vector<const TraceEvent*>> lanes;
  std::map<int, std::vector<const TraceEvent*>> steps;  // by pid
  for (const TraceEvent& e : spans) {
    if (e.dur < 0) problems.push_back("negative duration: " + Describe(e));
    lanes[{e.pid, e.tid}].push_back(&e);
    if (e.track == "host" && e.name.rfind("step ", 0) == 0) steps[e.pid].push_back(&e);
  }
  for (auto& [lane, list] : lanes) {
    std::stable_sort(list.begin(), list.end(), [](const TraceEvent* a, const TraceEvent* b) {
      return a->ts != b->ts ? a->ts < b->ts : a->dur > b->dur;
    });
    std::vector<const TraceEvent*> open;
    for (const TraceEvent* e : list) {
      while (!open.empty() && open.back()->ts + open.back()->dur <= e->ts + kSlackUs) {
        open.pop_back();
      }
      if (!open.empty() && e->ts + e->dur > open.back()->ts + open.back()->dur + kSlackUs) {
        problems.push_back("partial overlap: " + Describe(*e) + " starts inside " +
                           Describe(*open.back()) + " and ends after it");
      }
      open.push_back(e);
    }
  }
  for (const TraceEvent& e : spans) {
    if (e.track == "checkpoint") continue;
    bool inside = false;
    for (const TraceEvent* step : steps[e.pid]) {
      inside |= e.ts >= step->ts - kSlackUs && e.ts + e.dur <= step->ts + step->dur + kSlackUs;
    }
    if (!inside) problems.push_back("outside every step: " + Describe(e));
  }
  return problems;
}

}  // namespace moefold::testing
