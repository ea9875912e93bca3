// Per-step metrics: one JSON object per line in RUN_DIR/metrics.jsonl, plus the console progress
// (a live line on a terminal, plain log lines otherwise).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/profiler.h"
#include "absl/strings/string_view.h"

namespace moefold::train {

// Builds one flat JSON object; keys keep insertion order. Non-finite numbers are written as null
// (JSON has no NaN) so a diverged step still yields parseable metrics.
class JsonLine {
 public:
  JsonLine& Add(absl::string_view key, double value);
  JsonLine& Add(absl::string_view key, int64_t value);
  JsonLine& Add(absl::string_view key, int value) { return Add(key, static_cast<int64_t>(value)); }
  JsonLine& Add(absl::string_view key, bool value);
  JsonLine& Add(absl::string_view key, absl::string_view value);
  JsonLine& Add(absl::string_view key, const char* value) { return Add(key, absl::string_view(value)); }
  JsonLine& Add(absl::string_view key, const std::vector<double>& values);
  JsonLine& Add(absl::string_view key, const std::vector<std::vector<int64_t>>& rows);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void Key(absl::string_view key);
  std::string body_;
};

std::string JsonEscape(absl::string_view s);

// One profiled step as a JSON line: step, step_ms, unattributed_ms (GPU idle or unscoped), and per
// op family "<family>_ms", "<family>_calls" and "<family>_layer_ms" (ms per decoder layer, index =
// layer; only families timed inside layers).
JsonLine ProfileLine(int64_t step, const StepProfile& profile);

class MetricsWriter {
 public:
  ~MetricsWriter();
  // Creates RUN_DIR (and parents) and truncates RUN_DIR/FILE.
  absl::Status Open(const std::string& run_dir, const std::string& file = "metrics.jsonl");
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
