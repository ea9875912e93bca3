// `moefold report`: one self-contained HTML page about a run — headline, curves over steps, where
// the step time and the missing MFU went, memory, experts, stragglers, config, layout and
// environment — built from the files of its run directory (report/run_data.h). Charts are inline
// SVG, styles inline CSS; the page needs no network and no script. The page is also well-formed
// XML, so tests (and any XML tool) can read it.
//
//   MF_ASSIGN_OR_RETURN(std::string path, report::WriteReport(run_dir, ""));  //
//   RUN_DIR/report.html
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "report/run_data.h"

namespace moefold::report {

// The page for `run`. `trace_link`: the merged trace relative to the page ("" = none).
std::string RenderReport(const RunData& run, const std::string& trace_link);

// Reads `run_dir`, merges trace/rank-*.json into RUN_DIR/trace.json when the folder has any, and
// writes the page to `output` (RUN_DIR/report.html when empty), atomically. Returns the page's
// path. NotFound when `run_dir` does not exist; the write's error otherwise. A trace that cannot
// be merged is named in the page's notes and does not fail the report.
absl::StatusOr<std::string> WriteReport(const std::string& run_dir, const std::string& output);

}  // namespace moefold::report
