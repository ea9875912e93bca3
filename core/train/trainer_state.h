// The trainer's internals, shared by the files that implement Trainer (trainer.cc: the step;
// trainer_checkpoint.cc: saving and restoring). Not part of the trainer's API.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "checkpoint/shard_writer.h"
#include "core/data/gpt_dataset.h"
#include "core/data/indexed_dataset.h"
#include "core/data/training_data.h"
#include "core/model/fp8_linear.h"
#include "core/train/metrics.h"
#include "core/train/peak.h"
#include "core/train/pipeline_executor.h"
#include "core/train/tensorboard.h"
#include "core/train/trainer.h"
#include "core/train/watchdog.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "optim/reweighting.h"
#include "optim/spam.h"
#include "optim/zero1_adamw.h"
#include "parallel/grad_sync.h"

namespace moefold::train {

// This rank's communicators, resolved once from the ProcessGroups (nullptr: a group of one rank).
struct RankGroups {
  model::ModelParallel model;        // TP, CP and TP×CP for the layers
  parallel::GradSyncGroups sync;     // gradient reductions and the global norm
  parallel::Communicator* dp = nullptr;        // per-sample statistics (replicated over TP×CP)
  parallel::Communicator* tp_cp_dp = nullptr;  // per-token statistics (aux, z, expert load)
  parallel::Communicator* pp = nullptr;        // pipeline stages: activations, stage statistics
  parallel::Communicator* embedding = nullptr;  // first + last stage: the tied embedding's grads
  int world_rank = 0;
  int dp_rank = 0, dp_size = 1;
  int cp_rank = 0;
  int pp_rank = 0, pp_size = 1;
};

struct Trainer::State {
  config::ExperimentConfig config;
  TrainerOptions options;
  RankGroups groups;
  // Where the step runs: the CPU or this rank's GPU, its compute (default) stream, and the
  // activation dtype (master weights, gradients and optimizer state stay f32).
  Device device = Device::Cpu();
  Stream* stream = &CpuStream();
  DType act_dtype = DType::kF32;
  model::ModelSpec spec;
  ParameterSet params;
  std::vector<std::unique_ptr<model::Decoder>> chunks;  // this rank's model chunks (virtual stages)
  std::unique_ptr<PipelineExecutor> pipeline;
  int64_t tied_index = -1;  // ParameterSet index of a tied embedding shared across stages
  int num_moe_layers = 0;
  std::unique_ptr<parallel::GradSync> sync;
  std::unique_ptr<optim::AdamW> optimizer;                 // unsharded (every rank the whole model)
  std::unique_ptr<optim::ShardedAdamW> sharded_optimizer;  // ZeRO-1
  std::unique_ptr<optim::SpamTransform> spam;  // optimizer.name spam | stable_spam, else null
  std::unique_ptr<model::Fp8Training> fp8;     // precision.fp8_recipe, else null
  std::unique_ptr<optim::SampleReweighter> reweighter;
  optim::LrScheduleOptions schedule;
  std::unique_ptr<data::TrainingData> data;  // the splits of data.path / data.paths
  const data::SampleSource* samples = nullptr;  // data's train split
  MetricsWriter metrics;
  std::unique_ptr<TensorBoardWriter> tensorboard;  // RUN_DIR/tb (rank 0, logging.tensorboard)
  double loss_ema = 0;  // for the spike detector
  int64_t ema_steps = 0;
  int64_t micro_batch = 1;  // train.micro_batch_size, or what SetMicroBatchSize chose
  std::unique_ptr<Profiler> profiler;  // made for the first profiled step
  bool profile_all = false;            // SetProfiling
  bool profiling = false;              // the current step is profiled
  MetricsWriter profile_file;          // RUN_DIR/profile.jsonl (rank 0)
  std::vector<StepProfile> profiles;   // of this run, for the closing table
  // Checkpoints (trainer_checkpoint.cc): the save whose files are being written, if any.
  struct PendingSave {
    bool active = false;
    int64_t step = 0;      // steps completed when it was taken
    std::string tmp_dir;   // DIR/step-N.tmp
    checkpoint::TrainerScalars scalars;
  };
  checkpoint::AsyncShardWriter writer;
  PendingSave pending;
  std::string last_checkpoint;  // the newest complete checkpoint this run wrote
  double checkpoint_stall_s = 0;  // the current step's time spent on checkpoints
  Peak peak;  // the MFU peak per device (rank 0 with metrics; else unknown)
  std::unique_ptr<Watchdog> watchdog;  // TrainerOptions::watchdog (trainer_reliability.cc)
  int64_t verify_mismatches = 0;

  Tensor Upload(const Tensor& host) const { return host.To(device, *stream); }
  Profiler* profiler_if_profiling() const { return profiling ? profiler.get() : nullptr; }

  // Aux/z seeds are pre-multiplied by Z_ref = the global batch size (docs/DECISIONS.md).
  double z_ref() const { return static_cast<double>(config.train().global_batch_size()); }
  // Aux-loss units over the global batch: one per micro-batch or one per sequence.
  int64_t aux_units() const {
    const int64_t global_batch = config.train().global_batch_size();
    return spec.moe.aux_type == model::AuxLossType::kBatch ? global_batch / micro_batch
                                                           : global_batch;
  }
  bool microbatch_population() const {
    return config.reweighting().population() == "microbatch";
  }
  // The pipeline executor for the current micro-batch size (the shape passed between stages).
  absl::Status MakePipeline();
  // The FP8 recipe's state over this rank's projection weights (precision.fp8_recipe; none: null).
  absl::Status MakeFp8();
};

}  // namespace moefold::train
