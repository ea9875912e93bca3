// The figures the report derives from a run's records: medians, the final loss, where a step's time
// went (compute, exposed and overlapped communication per group kind, data, idle), the top sinks of
// MFU, per-rank stragglers and memory. Every figure the report prints comes from here, so a test
// can recompute it from metrics.jsonl with the same definitions.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "report/run_data.h"

namespace moefold::report {

// The median of the finite values (mean of the middle two for an even count); NaN when none.
double Median(std::vector<double> values);
// The median of `field` over `steps`.
double MedianOf(const std::vector<StepRecord>& steps, double StepRecord::*field);
// The mean LM loss of the last 10 steps (the trainer's summary uses the same window); NaN when
// no step recorded one.
double FinalLoss(const std::vector<StepRecord>& steps);

// One step's seconds by where they went. Exposed communication is time the compute waited inside
// the model and update phases, so compute = forward + backward (as logged, compute only) or, when
// the run did not log them, model_s − exposed; idle = step − compute − optimizer − data − exposed
// (never below 0). Overlapped = in flight while the compute went on (total − exposed).
struct Breakdown {
  double step = 0;
  bool forward_backward_split = false;  // forward/backward logged (else `forward` is both)
  double forward = 0, backward = 0;
  double optimizer = 0;  // update_s: the optimizer step and what follows it in the step
  double data = 0;
  double idle = 0;
  std::map<std::string, double> exposed;     // group kind -> s
  std::map<std::string, double> overlapped;  // group kind -> s
  double ExposedTotal() const;
  double OverlappedTotal() const;
  double Compute() const { return forward + backward + optimizer; }
};
Breakdown StepBreakdown(const StepRecord& step);
// The mean of the steps' breakdowns, leaving out the first step when there are more than two (it
// includes one-time set-up: allocator warm-up, first communicator use).
Breakdown MeanBreakdown(const std::vector<StepRecord>& steps);

// One sentence: "A step takes 85.2 ms on average: 48% forward, ...".
std::string DescribeBreakdown(const Breakdown& b);

// A candidate for lost MFU: a share of the step time that is not model FLOPs.
struct Sink {
  std::string name;
  double share = 0;    // of the step time, 0..1
  std::string source;  // "profile" or "metrics"
};
// The largest non-GEMM op families of the profiled steps (attention counts as model FLOPs), the
// exposed communication per group kind, data loading and idle time; largest first, at most `count`.
std::vector<Sink> TopSinks(const RunData& run, int count);

// Per op family over the profiled steps: mean ms per step, share of the step, calls per step.
struct OpRow {
  std::string family;
  double ms_per_step = 0, share = 0, calls_per_step = 0;
};
// Sorted by time, largest first; "unattributed" last.
std::vector<OpRow> OpTable(const std::vector<ProfileRecord>& profiles);

// Per world rank: the median of its step times over the steps that logged rank_step_time_s.
std::vector<double> RankMedianStepTimes(const std::vector<StepRecord>& steps);
// Per world rank: its largest device peak over the steps (rank 0 from device_peak_bytes when the
// run logged no per-rank peaks).
std::vector<double> RankPeakBytes(const std::vector<StepRecord>& steps);

}  // namespace moefold::report
