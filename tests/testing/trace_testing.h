// Reading back a per-rank trace (core/trace.h) in tests, and the structural checks every trace must
// pass: per track lane, spans nest (a child inside its parent, never a partial overlap); host, gpu
// and comm spans lie within one of their rank's step spans.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace moefold::testing {

struct TraceEvent {
  std::string name;
  std::string track;  // "cat": host, gpu, comm, checkpoint
  int pid = 0;
  int tid = 0;
  double ts = 0;  // µs
  double dur = 0;
  nlohmann::json args;
};

struct ParsedTrace {
  std::vector<TraceEvent> spans;            // the complete ("X") events, in file order
  std::map<int, std::string> thread_names;  // tid → name, from the metadata
  std::string process_name;
  nlohmann::json other_data;
  bool ok = false;  // the file parsed and had the trace's shape
};

// Reads `path`; ADD_FAILUREs (and returns ok = false) when it is missing, not JSON, or not a Chrome
// trace object ({"traceEvents": [...], "displayTimeUnit": "ms"}).
ParsedTrace ReadTrace(const std::string& path);

// Every violation, as a readable line: spans of one (pid, tid) that overlap without nesting; host,
// gpu and comm spans outside all step spans ("step N" on the host track) of their pid; negative
// durations. Empty = the trace is well formed.
std::vector<std::string> TraceProblems(const std::vector<TraceEvent>& spans);

}  // namespace moefold::testing
