// Per-step metrics: one JSON object per line in RUN_DIR/metrics.jsonl, plus the console progress
// (a live line on a terminal, plain log lines otherwise).
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/json_line.h"
#include "core/profiler.h"

namespace moefold::train {


// One profiled step as a JSON line: step, step_ms, unattributed_ms (GPU idle or unscoped), and per
// op family "<family>_ms", "<family>_calls" and "<family>_layer_ms" (ms per decoder layer, index =
// layer; only families timed inside layers).
JsonLine ProfileLine(int64_t step, const StepProfile& profile);

// {"dp-cp": 0.012, "edp": 0.030}: a map of named figures as one JSON object (keys in order).
JsonLine JsonObject(const std::map<std::string, double>& values);

class MetricsWriter {
 public:
  ~MetricsWriter();
  // Creates RUN_DIR (and parents) and truncates RUN_DIR/FILE, or appends to it (a resumed run
  // continues its log; steps redone after the checkpoint appear again, the later line counts).
  absl::Status Open(const std::string& run_dir, const std::string& file = "metrics.jsonl",
                    bool append = false);
  bool is_open() const { return file_ != nullptr; }
  void Write(const JsonLine& line);  // appends and flushes, so a crash keeps every finished step
  void Close();

 private:
  std::FILE* file_ = nullptr;
};

// Console progress. `live` redraws one line with \r (a terminal); otherwise prints a line every
// `every` steps.
class Progress {
 public:
  Progress(bool live, int every, int64_t total_steps);
  void Update(int64_t step, double loss, double tokens_per_s, double elapsed_s);
  void Finish();

 private:
  bool live_;
  int every_;
  int64_t total_;
  bool dirty_ = false;
};

std::string FormatDuration(double seconds);  // "1h02m", "3m05s", "12s"

}  // namespace moefold::train
