// The files of a run directory, read for `moefold report`: metrics.jsonl (one record per step),
// profile.jsonl, run.json, plan.json, summary.json and config.yaml. Reading is tolerant: a missing
// file, key or unparsable line leaves the figure unrecorded (NaN, empty, null) and adds a note, so
// an old or interrupted run still gets a report.
//
//   MF_ASSIGN_OR_RETURN(RunData run, ReadRunDir("runs/tiny_moe"));
//   for (const StepRecord& s : run.steps) ... s.lm_loss ...
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moefold::report {

// JSON read in file order, so tables list keys as the run wrote them.
using Json = nlohmann::ordered_json;

inline constexpr double kNotRecorded = std::numeric_limits<double>::quiet_NaN();

// One line of metrics.jsonl. Figures the line lacks (or writes as null) are kNotRecorded / empty.
struct StepRecord {
  int64_t step = 0;
  double loss = kNotRecorded, lm_loss = kNotRecorded, aux_loss = kNotRecorded;
  double z_loss = kNotRecorded, grad_norm = kNotRecorded, lr = kNotRecorded;
  double step_time_s = kNotRecorded, data_s = kNotRecorded, model_s = kNotRecorded;
  double update_s = kNotRecorded;
  double forward_s = kNotRecorded;   // this rank's compute in forward passes
  double backward_s = kNotRecorded;  // and in backward passes
  double checkpoint_stall_s = kNotRecorded;
  double tokens_per_s = kNotRecorded, tokens_per_s_per_device = kNotRecorded;
  double mfu = kNotRecorded;          // fraction of the peak, 0..1
  double peak_tflops = kNotRecorded;  // per device
  double tokens_dropped = kNotRecorded;
  double device_peak_bytes = kNotRecorded;
  double eval_loss = kNotRecorded;  // validation loss, on evaluated steps (train.eval_every)
  double test_loss = kNotRecorded;  // the final test-split loss, on the last step
  bool skipped = false;
  double verify_s = kNotRecorded;            // seconds re-running the step (train.verify_every)
  std::vector<double> verify_mismatch_ranks;  // ranks whose re-run differed (verified steps)
  std::map<std::string, double> comm_s;            // group kind -> seconds with an op in flight
  std::map<std::string, double> comm_exposed_s;    // group kind -> seconds the compute waited
  std::vector<std::vector<double>> expert_tokens;  // (MoE layer, expert) tokens routed
  std::vector<double> rank_step_time_s;            // one per world rank
  std::vector<double> rank_device_peak_bytes;      // one per world rank
};

// One line of profile.jsonl: a profiled step's exclusive milliseconds per op family.
struct ProfileRecord {
  int64_t step = 0;
  double step_ms = kNotRecorded;
  double unattributed_ms = kNotRecorded;  // step − Σ families: device idle or unscoped work
  std::map<std::string, double> family_ms;
  std::map<std::string, double> family_calls;
};

struct RunData {
  std::string run_dir;
  std::vector<StepRecord>
      steps;  // by step; a step logged twice (a resumed run) keeps its last line
  std::vector<ProfileRecord> profiles;
  Json run_info;                         // run.json (null when missing)
  Json plan;                             // plan.json
  Json summary;                          // summary.json
  std::string config_yaml;               // config.yaml verbatim ("" when missing)
  std::vector<std::string> trace_files;  // trace/rank-*.json, sorted by rank
  std::vector<Json> restarts;            // restarts.jsonl: one line per `moefold launch` restart
  std::vector<std::string> notes;        // what could not be read, for the report's footer
};

// NotFound when `run_dir` is not a directory; everything inside it is optional.
absl::StatusOr<RunData> ReadRunDir(const std::string& run_dir);

// The step record of one parsed metrics line (exposed for tests and other readers).
StepRecord StepRecordFromJson(const Json& line);

}  // namespace moefold::report
