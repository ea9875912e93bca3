// Derived figures of a run: medians, step-time breakdown, MFU sinks, per-op and per-rank tables.
#include "report/analysis.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "report/format.h"

namespace moefold::report {
namespace {

double OrZero(double v) { return std::isfinite(v) ? v : 0; }

// Op families whose time is model FLOPs (what MFU counts); the rest are candidates for lost MFU.
const std::set<std::string>& FlopFamilies() {
  static const std::set<std::string> families = {"gemm", "expert_gemm", "attention"};
  return families;
}

}  // namespace

double Median(std::vector<double> values) {
  values.erase(
      std::remove_if(values.begin(), values.end(), [](double v) { return !std::isfinite(v); }),
      values.end());
  if (values.empty()) return kNotRecorded;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double MedianOf(const std::vector<StepRecord>& steps, double StepRecord::*field) {
  std::vector<double> values;
  for (const StepRecord& s : steps) values.push_back(s.*field);
  return Median(std::move(values));
}

double FinalLoss(const std::vector<StepRecord>& steps) {
  double sum = 0;
  int count = 0;
  for (size_t i = steps.size() > 10 ? steps.size() - 10 : 0; i < steps.size(); ++i) {
    if (!std::isfinite(steps[i].lm_loss)) continue;
    sum += steps[i].lm_loss;
    ++count;
  }
  return count > 0 ? sum / count : kNotRecorded;
}

double Breakdown::ExposedTotal() const {
  double total = 0;
  for (const auto& [kind, s] : exposed) total += s;
  return total;
}

double Breakdown::OverlappedTotal() const {
  double total = 0;
  for (const auto& [kind, s] : overlapped) total += s;
  return total;
}

Breakdown StepBreakdown(const StepRecord& s) {
  Breakdown b;
  b.step = OrZero(s.step_time_s);
  for (const auto& [kind, total] : s.comm_s) {
    const auto it = s.comm_exposed_s.find(kind);
    const double exposed = it == s.comm_exposed_s.end() ? 0 : OrZero(it->second);
    b.exposed[kind] = exposed;
    b.overlapped[kind] = std::max(0.0, OrZero(total) - exposed);
  }
  for (const auto& [kind, exposed] : s.comm_exposed_s) b.exposed.emplace(kind, OrZero(exposed));
  b.forward_backward_split = std::isfinite(s.forward_s) && std::isfinite(s.backward_s);
  if (b.forward_backward_split) {
    b.forward = s.forward_s;
    b.backward = s.backward_s;
  } else {
    b.forward = std::max(0.0, OrZero(s.model_s) - b.ExposedTotal());
  }
  b.optimizer = OrZero(s.update_s);
  b.data = OrZero(s.data_s);
  b.idle = std::max(0.0, b.step - b.Compute() - b.data - b.ExposedTotal());
  return b;
}

Breakdown MeanBreakdown(const std::vector<StepRecord>& steps) {
  Breakdown mean;
  const size_t first = steps.size() > 2 ? 1 : 0;
  const double n = static_cast<double>(steps.size() - first);
  if (n <= 0) return mean;
  mean.forward_backward_split = true;
  for (size_t i = first; i < steps.size(); ++i) {
    const Breakdown b = StepBreakdown(steps[i]);
    mean.forward_backward_split &= b.forward_backward_split;
    mean.step += b.step / n;
    mean.forward += b.forward / n;
    mean.backward += b.backward / n;
    mean.optimizer += b.optimizer / n;
    mean.data += b.data / n;
    mean.idle += b.idle / n;
    for (const auto& [kind, s] : b.exposed) mean.exposed[kind] += s / n;
    for (const auto& [kind, s] : b.overlapped) mean.overlapped[kind] += s / n;
  }
  return mean;
}

std::string DescribeBreakdown(const Breakdown& b) {
  if (!(b.step > 0)) return "The run logged no step times.";
  auto share = [&](double s) { return FormatPercent(s / b.step, 0); };
  std::vector<std::string> parts;
  if (b.forward_backward_split) {
    parts.push_back(share(b.forward) + " forward");
    parts.push_back(share(b.backward) + " backward");
  } else {
    parts.push_back(share(b.forward) + " forward and backward");
  }
  parts.push_back(share(b.optimizer) + " optimizer");
  parts.push_back(share(b.data) + " data");
  std::string comm = share(b.ExposedTotal()) + " waiting for communication";
  std::string top_kind;
  double top = 0;
  for (const auto& [kind, s] : b.exposed) {
    if (s > top) top = s, top_kind = kind;
  }
  if (!top_kind.empty()) absl::StrAppend(&comm, " (most on ", top_kind, ")");
  parts.push_back(comm);
  parts.push_back(share(b.idle) + " idle");
  return absl::StrCat("A step takes ", FormatSeconds(b.step),
                      " on average: ", absl::StrJoin(parts, ", "), ".");
}

std::vector<Sink> TopSinks(const RunData& run, int count) {
  std::vector<Sink> sinks;
  for (const OpRow& row : OpTable(run.profiles)) {
    if (FlopFamilies().count(row.family) || row.family == "communication") continue;
    const std::string name = row.family == "unattributed"
                                 ? "unattributed device time (idle or unscoped work)"
                                 : row.family + " kernels";
    sinks.push_back({name, row.share, "profile"});
  }
  const Breakdown b = MeanBreakdown(run.steps);
  if (b.step > 0) {
    for (const auto& [kind, s] : b.exposed) {
      sinks.push_back({"exposed " + kind + " communication", s / b.step, "metrics"});
    }
    sinks.push_back({"idle (step time no phase accounts for)", b.idle / b.step, "metrics"});
    sinks.push_back({"data loading", b.data / b.step, "metrics"});
  }
  std::stable_sort(sinks.begin(), sinks.end(),
                   [](const Sink& a, const Sink& b) { return a.share > b.share; });
  sinks.erase(
      std::remove_if(sinks.begin(), sinks.end(), [](const Sink& s) { return !(s.share > 0); }),
      sinks.end());
  if (static_cast<int>(sinks.size()) > count) sinks.resize(count);
  return sinks;
}

std::vector<OpRow> OpTable(const std::vector<ProfileRecord>& profiles) {
  std::vector<OpRow> rows;
  if (profiles.empty()) return rows;
  const double n = static_cast<double>(profiles.size());
  std::map<std::string, OpRow> by_family;
  double step_ms = 0, unattributed = 0;
  for (const ProfileRecord& p : profiles) {
    step_ms += OrZero(p.step_ms) / n;
    unattributed += OrZero(p.unattributed_ms) / n;
    for (const auto& [family, ms] : p.family_ms) {
      OpRow& row = by_family[family];
      row.family = family;
      row.ms_per_step += OrZero(ms) / n;
      const auto calls = p.family_calls.find(family);
      if (calls != p.family_calls.end()) row.calls_per_step += OrZero(calls->second) / n;
    }
  }
  for (auto& [family, row] : by_family) {
    if (row.ms_per_step <= 0 && row.calls_per_step <= 0) continue;  // families the model lacks
    row.share = step_ms > 0 ? row.ms_per_step / step_ms : 0;
    rows.push_back(row);
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const OpRow& a, const OpRow& b) { return a.ms_per_step > b.ms_per_step; });
  rows.push_back({"unattributed", unattributed, step_ms > 0 ? unattributed / step_ms : 0, 0});
  return rows;
}

std::vector<double> RankMedianStepTimes(const std::vector<StepRecord>& steps) {
  std::vector<std::vector<double>> per_rank;
  for (const StepRecord& s : steps) {
    if (per_rank.size() < s.rank_step_time_s.size()) per_rank.resize(s.rank_step_time_s.size());
    for (size_t r = 0; r < s.rank_step_time_s.size(); ++r) {
      per_rank[r].push_back(s.rank_step_time_s[r]);
    }
  }
  std::vector<double> medians;
  for (auto& times : per_rank) medians.push_back(Median(std::move(times)));
  return medians;
}

std::vector<double> RankPeakBytes(const std::vector<StepRecord>& steps) {
  std::vector<double> peaks;
  for (const StepRecord& s : steps) {
    if (peaks.size() < s.rank_device_peak_bytes.size()) {
      peaks.resize(s.rank_device_peak_bytes.size(), kNotRecorded);
    }
    for (size_t r = 0; r < s.rank_device_peak_bytes.size(); ++r) {
      const double v = s.rank_device_peak_bytes[r];
      if (std::isfinite(v)) peaks[r] = std::isfinite(peaks[r]) ? std::max(peaks[r], v) : v;
    }
  }
  if (!peaks.empty()) return peaks;
  double rank0 = kNotRecorded;
  for (const StepRecord& s : steps) {
    if (std::isfinite(s.device_peak_bytes)) {
      rank0 = std::isfinite(rank0) ? std::max(rank0, s.device_peak_bytes) : s.device_peak_bytes;
    }
  }
  if (std::isfinite(rank0)) peaks.push_back(rank0);
  return peaks;
}

}  // namespace moefold::report
