// The step (docs/ARCHITECTURE.md §6): global batch → micro-batches → forward, per-sample losses →
// reweighting → backward → deferred normalisation → clipping → anomaly check → AdamW → metrics.
// One rank, or every rank of a layout (data, tensor/sequence and context parallelism) given by
// ProcessGroups: each rank takes its DP slice of the global batch and its CP chunks of each
// sequence, and all of them log the same step values.
//
//   MF_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(config, {.run_dir = "runs/tiny"}));
//   MF_ASSIGN_OR_RETURN(TrainSummary summary, trainer->Run());
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/model/decoder.h"
#include "core/parameter.h"
#include "core/data/split.h"
#include "core/profiler.h"
#include "core/train/evaluator.h"
#include "core/train/flops.h"
#include "parallel/communicator.h"
#include "parallel/process_groups.h"

namespace moefold::train {

struct TrainerOptions {
  // Every group of this rank's layout (not owned; must outlive the trainer); nullptr = one rank.
  // The config's parallel sizes must match the mapping's.
  const parallel::ProcessGroups* groups = nullptr;
  std::string run_dir = "runs/default";
  bool write_metrics = true;
  bool print_progress = true;
  bool live_progress = false;  // redraw one line (set when stdout is a terminal)
  int64_t fail_at_step = -1;   // fault injection for tests: this rank fails at that step
  int cuda_device = 0;         // the GPU of this rank when train.device is cuda
  // Run() stops after this many steps have completed (saving a checkpoint there when
  // checkpoint.dir is set), as a preempted job would; -1 = run to train.steps.
  int64_t stop_after_steps = -1;
  // Fault injection for tests: this rank's checkpoint write of that step (steps completed) fails
  // after its shard file is written ("fail"), or the process kills itself there ("kill").
  int64_t checkpoint_fault_step = -1;
  std::string checkpoint_fault;  // "fail" or "kill"
  bool resume = false;           // like checkpoint.resume (moefold train --resume)
  // Fault injection for tests: the gradients of step spike_step are multiplied by spike_scale
  // before the global norm and clipping (a gradient spike); -1 = never.
  int64_t spike_step = -1;
  float spike_scale = 1e4f;
  // For the run directory's run.json (rank 0 with write_metrics): the launch's argv and the layout
  // as the launcher prints it.
  std::vector<std::string> command_line;
  std::string layout_description = "one rank";
  // Reliability (core/train/watchdog.h): run the hang watchdog (heartbeats and flight records in
  // RUN_DIR/flight/, train.hang_timeout_s) and how it ends the job (e.g. MPI_Abort; empty: _exit).
  bool watchdog = false;
  std::function<void(int exit_code)> end_job;
  // Fault injection for tests: this rank flips a bit of its gradient after the reductions of step
  // bitflip_step (not in train.verify_every's reference run of it), or raises kill_signal
  // (SIGKILL) there (kill_step; not in a resumed run, so a restarted run gets past it); -1 = never.
  int64_t bitflip_step = -1;
  int64_t kill_step = -1;
  int kill_signal = 9;  // what kill_step raises (SIGTERM tests preemption)
  // Fault injection for tests: this rank's anomaly check sees a non-finite loss at that step (as
  // if its copy of a reduced value were corrupted); the ranks must still agree to skip together.
  int64_t local_anomaly_step = -1;
};

// What one optimizer step measured.
struct StepResult {
  int64_t step = 0;
  double loss = 0;           // weighted LM loss + aux + z (the objective)
  double lm_loss = 0;        // plain mean of per-sample LM losses (comparable across strategies)
  double weighted_lm_loss = 0;
  double aux_loss = 0;
  double z_loss = 0;
  double grad_norm = 0;      // before clipping
  double lr = 0;
  double normaliser = 0;     // Z = Σ uᵢ of the reweighting
  double max_weight_ratio = 0;  // max uᵢ / min uᵢ in the step
  bool skipped = false;      // NaN/Inf or loss spike on any rank: no optimizer update on any
  bool stop_requested = false;  // SIGTERM / SIGINT reached some rank: stop after this step
  double verify_s = 0;       // train.verify_every: the time of the step's second run (0: none)
  std::vector<int> verify_mismatch_ranks;  // ranks whose second run differed (world ranks)
  int64_t tokens = 0;          // of the global batch
  double step_time_s = 0;
  // Where the step's time went (host clock; each phase ends at a wait for the device): building
  // the micro-batches; forward, backward and gradient reductions up to the global norm; clipping,
  // the optimizer update and the end-of-step wait.
  double data_s = 0, model_s = 0, update_s = 0;
  // This rank's compute in the forward and backward passes on the compute stream (device time;
  // waits for pipeline inputs excluded; the exposed part of the exchanges inside the layers moved
  // to comm_exposed_s, shared between the two in proportion).
  double forward_s = 0, backward_s = 0;
  // Every rank's step time and device high-water mark, by world rank (rank 0 logs them; one rank:
  // this rank's).
  std::vector<double> rank_step_time_s;
  std::vector<int64_t> rank_device_peak_bytes;
  int64_t grad_bytes_sent = 0;          // by this rank in the gradient reductions
  int64_t grad_bytes_uncompressed = 0;  // what the uncompressed reduction would have sent
  std::vector<double> expert_imbalance;  // per MoE layer: max load / mean load
  std::vector<std::vector<int64_t>> expert_tokens;  // per MoE layer: (token, choice) pairs per expert
  int64_t tokens_dropped = 0;  // pairs over capacity, all MoE layers and ranks
  int64_t dispatch_bytes = 0;  // bytes the token dispatchers of all ranks sent (forward + backward)
  int64_t device_peak_bytes = 0;  // high-water mark of this rank's compute-device memory so far
  std::optional<StepProfile> profile;  // op-family times, for profiled steps
  // This rank's communication per group kind ("dp-cp", "edp", "ep", "tp", ...; the communicators'
  // names), parallel/timed_communicator.h: the time an op of the group was in flight, and the part
  // of it the compute waited (the host blocked on the CPU, the compute stream idle on a GPU).
  // Empty on one rank.
  std::map<std::string, double> comm_s;
  std::map<std::string, double> comm_exposed_s;
};

struct TrainSummary {
  int64_t steps = 0;
  int64_t skipped_steps = 0;
  double first_loss = 0;
  double final_loss = 0;  // mean lm_loss of the last min(10, steps) steps
  int64_t tokens = 0;
  double wall_s = 0;
  double tokens_per_s = 0;
  double model_flops_per_token = 0;
  ParameterCounts params;
  std::string run_dir;
  int64_t profiled_steps = 0;
  std::string profile_table;  // FormatProfileTable of the profiled steps (empty: none)
  // Model FLOPs utilisation (docs/FORMULAS.md §10): the median over the run's steps (the first
  // step of the run left out when there are others), against peak_tflops per device.
  double mfu = 0;
  double peak_tflops = 0;  // 0 = unknown: no MFU
  std::string peak_source;
  int world_size = 1;
  double tokens_per_s_per_device = 0;  // tokens_per_s / world_size
  // Medians over the same steps: the step and where it went.
  double median_step_s = 0, median_data_s = 0, median_forward_s = 0, median_backward_s = 0,
         median_update_s = 0, median_comm_exposed_s = 0;
  std::string report_path;      // the HTML report written at the end (empty: none)
  int64_t resumed_from = -1;    // the checkpoint's step when the run resumed (-1: from scratch)
  std::string last_checkpoint;  // the newest complete checkpoint the run wrote (empty: none)
  std::optional<double> eval_loss;  // the last validation loss (train.eval_every)
  std::optional<double> test_loss;  // the final test-split loss (data.split with a test share)
  // Stopped by SIGTERM / SIGINT (on any rank) after the step, with a checkpoint when
  // checkpoint.dir is set: the process exits with kExitPreempted (core/train/exit_codes.h).
  bool preempted = false;
  int64_t verified_steps = 0, verify_mismatches = 0;  // train.verify_every
};

class Trainer {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const config::ExperimentConfig& config,
                                                         const TrainerOptions& options);
  ~Trainer();

  absl::StatusOr<TrainSummary> Run();
  // One optimizer step on the global batch of `step` (also used by tests).
  absl::StatusOr<StepResult> Step(int64_t step);
  // The forward pass alone over global batches [first_batch, first_batch + num_batches) of a split
  // (core/train/evaluator.h); collective, every rank gets the same result. FailedPrecondition when
  // the split was not built (no share in data.split, or no samples requested).
  absl::StatusOr<EvalResult> Evaluate(data::SplitKind split, int64_t first_batch,
                                      int64_t num_batches);

  ParameterSet& params();
  model::Decoder& model();

  // Checkpoints (docs/ARCHITECTURE.md §11); collective: every rank calls them at the same step.
  // Takes the state after `steps_done` steps to host memory and starts writing it to
  // checkpoint.dir/step-N (in the background when checkpoint.async), after waiting for the previous
  // save. The save is complete only once FinishSave (or a later PollSave) has written the manifest.
  absl::Status BeginSave(int64_t steps_done);
  // Finalises the save in progress when every rank has written its files: rank 0 merges the ranks'
  // records into the manifest, renames the directory into place, moves `latest` and prunes old
  // checkpoints. wait = false returns at once while some rank is still writing. The error of a
  // failed save names the rank and the file; the previous checkpoint is untouched.
  absl::Status PollSave(bool wait);
  absl::Status FinishSave() { return PollSave(/*wait=*/true); }
  // Loads the newest complete checkpoint of checkpoint.dir into this trainer (any layout: each rank
  // reads its slices) and returns the step to continue with; 0 (nothing loaded) when the directory
  // holds none. Refuses, naming the setting, a checkpoint of another model or data.
  absl::StatusOr<int64_t> Resume();
  // Loads the checkpoint in `dir` (a step directory); returns its step.
  absl::StatusOr<int64_t> Restore(const std::string& dir);

  // Benchmarks reuse one trainer (its initialised, uploaded parameters) across settings that do
  // not change the model: the micro-batch size (global_batch_size must divide by it × dp;
  // InvalidArgument otherwise) and forced-balanced routing. Only between steps.
  absl::Status SetMicroBatchSize(int64_t micro_batch);
  void SetForceBalancedRouting(bool balanced);
  // Profiles every following step (StepResult::profile) until switched off, besides the config's
  // logging.profile_steps. Profiling adds events around every op family: time other steps.
  void SetProfiling(bool on);

 private:
  struct State;
  struct StepWork;
  explicit Trainer(std::unique_ptr<State> state);
  // The phases of Step, in order (docs/ARCHITECTURE.md §6).
  absl::Status BeginStep(int64_t step, StepWork* w);  // also starts a profiled step
  absl::Status GatherBatch(StepWork* w);       // this rank's micro-batches, uploaded once
  absl::Status RunSchedule(StepWork* w);       // forward, losses, reweighting seeds, backward
  absl::Status FinishGradients();              // the data-parallel reductions complete
  absl::Status ReduceStatistics(StepWork* w);  // losses and Z over the layout; gradients / Z
  absl::Status ClipGradients(StepWork* w);     // the global norm and the clip factor
  void CheckAnomalies(StepWork* w);            // non-finite or spiking: skip the update
  absl::Status Update(StepWork* w);            // AdamW and the compute copies
  absl::Status RecordExpertLoad(StepWork* w);  // expert counts, drops, bytes; the expert bias
  absl::Status EndStep(StepWork* w);           // waits for the device; times, memory, profile
  absl::Status GatherRankFigures(StepResult* r);  // every rank's step time and memory peak
  absl::Status EndTrace(StepWork* w);  // a traced step's gpu spans and end (core/trace.h)
  // The validation and test evaluations due after `step` (core/train/evaluator.cc).
  absl::StatusOr<StepEvaluation> EvaluateAfterStep(int64_t step);
  // Reliability (trainer_reliability.cc). The step loop; Run adds the watchdog around it.
  absl::StatusOr<TrainSummary> RunSteps();
  // One agreement over the world per step, after the anomaly check: a skip (NaN/Inf or spike) on
  // any rank is a skip on all, and a stop request (preemption signal) on any rank stops all.
  absl::Status AgreeOnStep(StepResult* r);
  // train.verify_every: when `step` is due, runs its forward and backward once (the reference)
  // from the current state, leaving that state as it was; returns the reference's digest.
  absl::StatusOr<std::vector<uint64_t>> VerifyReference(int64_t step);
  absl::StatusOr<std::vector<uint64_t>> RunReference(int64_t step);  // trainer.cc: the phases
  // This rank's digest of a step: its forward's loss sums (`device_sums`, before any reduction),
  // each gradient bucket's Σg² of the part this rank owns, and the step's loss and norm (bits).
  absl::StatusOr<std::vector<uint64_t>> StepDigest(const Tensor& device_sums, const StepResult& r);
  // Compares the step's digest with the reference on every rank and agrees on the ranks whose
  // result changed (r->verify_mismatch_ranks); an error under train.on_mismatch stop.
  absl::Status CheckVerify(const std::vector<uint64_t>& reference,
                           const std::vector<uint64_t>& digest, StepResult* r);
  absl::Status InjectFaults(int64_t step);  // the bit flip and kill test hooks
  std::unique_ptr<State> state_;
};

std::string FormatSummary(const TrainSummary& summary);
// The summary's MFU and medians from the run's steps (mfus[i] of steps[i]; NaN = unknown).
void SummariseSteps(const std::vector<StepResult>& steps, const std::vector<double>& mfus,
                    TrainSummary* summary);

}  // namespace moefold::train
