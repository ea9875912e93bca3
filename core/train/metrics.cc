// metrics.jsonl writer and console progress.
#include "core/train/metrics.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace moefold::train {

MetricsWriter::~MetricsWriter() { Close(); }

JsonLine ProfileLine(int64_t step, const StepProfile& profile) {
  JsonLine line;
  line.Add("step", step).Add("step_ms", profile.step_ms).Add("unattributed_ms",
                                                             profile.unattributed_ms);
  for (int f = 0; f < kNumOpFamilies; ++f) {
    const std::string name(OpFamilyName(static_cast<OpFamily>(f)));
    line.Add(name + "_ms", profile.family_ms[f]).Add(name + "_calls", profile.calls[f]);
    std::vector<double> layers;
    for (const auto& [key, ms] : profile.family_layer_ms) {
      if (key.first != f || key.second < 0) continue;
      if (static_cast<int>(layers.size()) <= key.second) layers.resize(key.second + 1, 0.0);
      layers[key.second] += ms;
    }
    if (!layers.empty()) line.Add(name + "_layer_ms", layers);
  }
  return line;
}

absl::Status MetricsWriter::Open(const std::string& run_dir, const std::string& file,
                                 bool append) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create run directory ", run_dir, ": ", ec.message()));
  }
  const std::string path = run_dir + "/" + file;
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (file_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

JsonLine JsonObject(const std::map<std::string, double>& values) {
  JsonLine object;
  for (const auto& [key, value] : values) object.Add(key, value);
  return object;
}

void MetricsWriter::Write(const JsonLine& line) {
  if (file_ != nullptr) line.Print(file_);
}

void MetricsWriter::Close() {
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

Progress::Progress(bool live, int every, int64_t total_steps)
    : live_(live), every_(every > 0 ? every : 1), total_(total_steps) {}

void Progress::Update(int64_t step, double loss, double tokens_per_s, double elapsed_s) {
  const int64_t done = step + 1;
  const double eta = done > 0 ? elapsed_s / done * (total_ - done) : 0;
  const std::string text =
      absl::StrFormat("step %d/%d  loss %.4f  %.0f tok/s  elapsed %s  ETA %s", done, total_, loss,
                      tokens_per_s, FormatDuration(elapsed_s), FormatDuration(eta));
  if (live_) {
    std::fprintf(stdout, "\r%-90s", text.c_str());
    std::fflush(stdout);
    dirty_ = true;
  } else if (done % every_ == 0 || done == total_ || done == 1) {
    std::fprintf(stdout, "%s\n", text.c_str());
    std::fflush(stdout);
  }
}

void Progress::Finish() {
  if (dirty_) std::fprintf(stdout, "\n");
  dirty_ = false;
}

}  // namespace moefold::train
