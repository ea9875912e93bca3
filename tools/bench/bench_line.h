// The benchmarks' output format: one JSON object per line, {"bench": name, ...fields}, printed to
// stdout and flushed at once (JsonLine::Print) so a run that dies part way keeps every figure it
// printed. No CUDA: the CPU-only step benchmark uses it too.
#pragma once

#include "absl/strings/string_view.h"
#include "core/json_line.h"

namespace moefold::bench {

// A JSON line whose first field names the benchmark; add fields, then Print().
inline JsonLine BenchLine(absl::string_view bench) {
  JsonLine line;
  line.Add("bench", bench);
  return line;
}

}  // namespace moefold::bench
