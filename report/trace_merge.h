// Merges the per-rank Chrome/Perfetto traces of a run (RUN_DIR/trace/rank-NNNNN.json, each
// {"traceEvents": [...]} or a bare event array) into one trace with a process track per rank:
// every event's pid becomes its rank, and each rank gets "process_name" = "rank N" and a sort
// index, so ui.perfetto.dev and chrome://tracing list the ranks in order. Timestamps are kept as
// each rank wrote them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moefold::report {

struct MergedTrace {
  std::string path;
  int ranks = 0;
  int64_t events = 0;  // events copied from the ranks' files (metadata added here not counted)
};

// Writes the merge of `rank_files` (named rank-N.json; N is the rank) to `output`, atomically.
// InvalidArgument naming the file when one is not a trace or not named by its rank; NotFound when
// `rank_files` is empty; the write's error otherwise.
absl::StatusOr<MergedTrace> MergeTraces(const std::vector<std::string>& rank_files,
                                        const std::string& output);

}  // namespace moefold::report
