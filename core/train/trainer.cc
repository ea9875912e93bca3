// The training step (docs/ARCHITECTURE.md §6). Reweighting follows docs/FORMULAS.md §6.4: each
// sample's unnormalised weight uᵢ seeds its backward, the normaliser Z = Σuᵢ divides the
// accumulated gradient once, so the result does not depend on the micro-batch size. Aux/z-loss
// gradients are seeded pre-multiplied by Z_ref = global batch size, which makes them exact for
// uniform weights (see docs/DECISIONS.md).
#include "core/train/trainer.h"
#include "core/train/trainer_state.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "configs/validate.h"
#include "core/allocator.h"
#include "core/cuda_runtime.h"
#include "core/data/indexed_dataset.h"
#include "core/data/prep_data.h"
#include "core/data/tokenizer.h"
#include "core/flight_recorder.h"
#include "core/hf/import.h"
#include "core/trace.h"
#include "core/train/activation_setup.h"
#include "core/train/metrics.h"
#include "core/train/micro_batches.h"
#include "core/train/model_from_config.h"
#include "core/train/pipeline_executor.h"
#include "core/train/run_files.h"
#include "optim/adamw.h"
#include "optim/grad_clip.h"
#include "optim/lr_schedule.h"
#include "optim/reweighting.h"
#include "optim/zero1_adamw.h"
#include "parallel/grad_sync.h"

namespace moefold::train {

absl::StatusOr<RankGroups> ResolveGroups(const config::ExperimentConfig& config,
                                         const parallel::ProcessGroups* groups) {
  RankGroups g;
  g.model.sequence_parallel = config.parallel().sequence_parallel();
  if (groups == nullptr) return g;
  const parallel::Mapping& mapping = groups->mapping();
  const auto& p = config.parallel();
  const parallel::ParallelSizes& sizes = mapping.sizes();
  if (sizes.tp != p.tp() || sizes.cp != p.cp() || sizes.pp != p.pp() || sizes.etp != p.etp() ||
      sizes.ep != p.ep() || (p.dp() > 0 && sizes.dp != p.dp())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the process groups' mapping (tp ", sizes.tp, ", cp ", sizes.cp, ", dp ", sizes.dp,
        ", pp ", sizes.pp, ", etp ", sizes.etp, ", ep ", sizes.ep,
        ") differs from the config's parallel section"));
  }
  auto get = [&](parallel::GroupKind kind) -> absl::StatusOr<parallel::Communicator*> {
    MF_ASSIGN_OR_RETURN(parallel::Communicator * comm, groups->Get(kind));
    return comm->size() == 1 ? nullptr : comm;
  };
  MF_ASSIGN_OR_RETURN(g.model.tp, get(parallel::GroupKind::kTp));
  MF_ASSIGN_OR_RETURN(g.model.cp, get(parallel::GroupKind::kCp));
  MF_ASSIGN_OR_RETURN(g.model.tp_cp, get(parallel::GroupKind::kTpCp));
  MF_ASSIGN_OR_RETURN(g.model.experts.ep, get(parallel::GroupKind::kEp));
  MF_ASSIGN_OR_RETURN(g.model.experts.etp, get(parallel::GroupKind::kEtp));
  MF_ASSIGN_OR_RETURN(g.model.experts.etp_ep, get(parallel::GroupKind::kEtpEp));
  MF_ASSIGN_OR_RETURN(g.sync.dp_cp, get(parallel::GroupKind::kDpCp));
  MF_ASSIGN_OR_RETURN(g.sync.tp_cp_dp, get(parallel::GroupKind::kTpCpDp));
  MF_ASSIGN_OR_RETURN(g.sync.edp, get(parallel::GroupKind::kEdp));
  MF_ASSIGN_OR_RETURN(g.sync.etp_ep, get(parallel::GroupKind::kEtpEp));
  MF_ASSIGN_OR_RETURN(g.sync.pp, get(parallel::GroupKind::kPp));
  MF_ASSIGN_OR_RETURN(g.dp, get(parallel::GroupKind::kDp));
  g.sync.tp = g.model.tp;
  g.tp_cp_dp = g.sync.tp_cp_dp;
  g.pp = g.sync.pp;
  g.world_rank = groups->world().rank();
  const parallel::AttentionCoords coords = mapping.attention_coords(g.world_rank);
  g.dp_rank = coords.dp;
  g.dp_size = sizes.dp;
  g.cp_rank = coords.cp;
  g.pp_rank = coords.pp;
  g.pp_size = sizes.pp;
  const bool end_stage = coords.pp == 0 || coords.pp == sizes.pp - 1;
  if (config.model().tie_embeddings() && sizes.pp > 1 && end_stage) {
    MF_ASSIGN_OR_RETURN(g.embedding, get(parallel::GroupKind::kEmbedding));
  }
  return g;
}

absl::Status Trainer::State::MakeFp8() {
  const config::PrecisionConfig& pr = config.precision();
  model::Fp8Options options;
  MF_ASSIGN_OR_RETURN(options.recipe, model::ParseFp8Recipe(pr.fp8_recipe()));
  if (options.recipe == model::Fp8Recipe::kNone) return absl::OkStatus();
  options.amax_history = pr.amax_history();
  options.grad_format = pr.fp8_grad_format() == "e4m3" ? DType::kFp8E4M3 : DType::kFp8E5M2;
  options.pow2_scales = pr.pow2_scales();
  options.fused_producers = pr.fp8_fused_producers();
  options.dispatch = pr.fp8_dispatch();
  options.sp_gather = pr.fp8_gather();
  // The delayed amaxes reduce over every rank of this pipeline stage (TP×CP×DP, which is also
  // ETP×EP×EDP): together they hold every shard and see the whole global batch.
  MF_ASSIGN_OR_RETURN(fp8, model::Fp8Training::Create(options, params, groups.model,
                                                      groups.tp_cp_dp, device));
  return absl::OkStatus();
}

absl::Status Trainer::State::MakePipeline() {
  std::string schedule = config.parallel().schedule();
  if (schedule == "auto") schedule = chunks.size() > 1 ? "interleaved" : "1f1b";
  MF_ASSIGN_OR_RETURN(const parallel::ScheduleKind kind, parallel::ParseScheduleKind(schedule));
  const int64_t local_seq = config.train().seq_len() / groups.model.cp_size();
  const int64_t rows = micro_batch * local_seq /
                       (groups.model.sequence_parallel ? groups.model.tp_size() : 1);
  std::vector<model::Decoder*> list;
  for (auto& c : chunks) list.push_back(c.get());
  pipeline = std::make_unique<PipelineExecutor>(list, groups.pp, kind, Shape{rows, spec.hidden});
  return absl::OkStatus();
}

Trainer::Trainer(std::unique_ptr<State> state) : state_(std::move(state)) {}
Trainer::~Trainer() {
  // A run that stopped before its last traced step (or failed in one) still leaves its trace.
  if (absl::Status s = Tracer::Get().Flush(); !s.ok()) {
    std::fprintf(stderr, "warning: %s\n", std::string(s.message()).c_str());
  }
}
ParameterSet& Trainer::params() { return state_->params; }
model::Decoder& Trainer::model() { return *state_->chunks.front(); }

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const config::ExperimentConfig& config,
                                                         const TrainerOptions& options) {
  MF_ASSIGN_OR_RETURN(RankGroups groups, ResolveGroups(config, options.groups));
  if (config.train().global_batch_size() %
          (config.train().micro_batch_size() * groups.dp_size) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.global_batch_size ", config.train().global_batch_size(),
        " is not divisible by micro_batch_size ", config.train().micro_batch_size(), " × dp ",
        groups.dp_size));
  }
  auto state = std::make_unique<State>();
  state->config = config;
  state->options = options;
  state->groups = groups;
  MF_ASSIGN_OR_RETURN(state->spec, ModelSpecFromConfig(config));
  MF_ASSIGN_OR_RETURN(state->act_dtype, ParseDType(config.precision().compute_dtype()));
  if (config.train().device() == "cuda") {
    if (cuda::DeviceCount() <= options.cuda_device) {
      const char* build = cuda::BackendBuilt() ? "" : "moefold was built without CUDA and ";
      return absl::FailedPreconditionError(
          absl::StrCat("train.device is cuda but ", build, "this process sees ",
                       cuda::DeviceCount(), " GPU(s) (wanted GPU ", options.cuda_device, ")"));
    }
    MF_RETURN_IF_ERROR(cuda::SetDevice(options.cuda_device));
    if (config.precision().fp8_recipe() != "none") {
      MF_ASSIGN_OR_RETURN(const cuda::DeviceInfo gpu, cuda::GetDeviceInfo(options.cuda_device));
      MF_ASSIGN_OR_RETURN(const model::Fp8Recipe recipe,
                          model::ParseFp8Recipe(config.precision().fp8_recipe()));
      MF_RETURN_IF_ERROR(model::CheckFp8Device(recipe, gpu.sm_major, gpu.sm_minor, gpu.name));
    }
    state->device = Device::Cuda(options.cuda_device);
    state->stream = &DefaultStream(state->device);
  }

  // The tokenizer the data was prepared with must fit the model's vocabulary (the byte one is
  // checked by Validate); its ids are checked against the datasets below.
  if (config.data().tokenizer() != "byte") {
    MF_ASSIGN_OR_RETURN(const std::unique_ptr<data::Tokenizer> tokenizer,
                        data::LoadTokenizer(config.data().tokenizer(),
                                            config.data().tokenizer_path()));
    MF_RETURN_IF_ERROR(data::CheckVocabulary(*tokenizer, state->spec.vocab));
  }
  // Data: the configured Megatron dataset(s), or the built-in corpus prepared on first use, cut
  // into Megatron's splits and blended (core/data/training_data.h).
  data::TrainingDataOptions data_options;
  const std::string cache_dir =
      config.data().cache_dir().empty() ? std::string("data") : config.data().cache_dir();
  data_options.paths.assign(config.data().paths().begin(), config.data().paths().end());
  if (data_options.paths.empty()) {
    std::string prefix = config.data().path();
    if (prefix.empty()) {
      MF_ASSIGN_OR_RETURN(prefix, data::EnsureBuiltinDataset(cache_dir));
    }
    data_options.paths = {prefix};
  }
  data_options.cache_dir = cache_dir + "/index-cache";
  const auto& train = config.train();
  const SplitSampleCounts counts = SamplesPerSplit(config);
  data_options.split = config.data().split();
  data_options.seq_len = train.seq_len();
  data_options.seed = config.data().seed();
  data_options.num_samples = {counts.train, counts.valid, counts.test};
  data_options.vocab_size = state->spec.vocab;
  MF_ASSIGN_OR_RETURN(state->data, data::TrainingData::Open(data_options));
  state->samples = state->data->split(data::SplitKind::kTrain);
  if (train.eval_every() > 0 && state->data->split(data::SplitKind::kValid) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train.eval_every = ", train.eval_every(), " needs a validation share in data.split (\"",
        config.data().split(), "\" has none; e.g. \"98,2,0\")"));
  }

  // This rank's chunks: virtual stage c·pp + pp_rank for c < virtual_stages, each a contiguous
  // range of layers; the embedding on virtual stage 0, the head on the last.
  MF_ASSIGN_OR_RETURN(const std::vector<int> stage_layers, config::StageLayerCounts(config));
  const int chunks = config.parallel().virtual_stages(), stages = groups.pp_size * chunks;
  for (int c = 0; c < chunks; ++c) {
    const int s = c * groups.pp_size + groups.pp_rank;
    model::DecoderStage stage;
    for (int i = 0; i < s; ++i) stage.first_layer += stage_layers[i];
    stage.last_layer = stage.first_layer + stage_layers[s];
    stage.embedding = s == 0;
    stage.head = s == stages - 1;
    state->chunks.push_back(
        std::make_unique<model::Decoder>(state->spec, groups.model, &state->params, stage));
    if (stages > 1 && state->spec.tie_embeddings) {
      const Parameter* tied = stage.embedding ? state->chunks.back()->embedding()
                                              : state->chunks.back()->tied_copy();
      for (size_t i = 0; tied != nullptr && i < state->params.params().size(); ++i) {
        if (state->params.params()[i].get() == tied) state->tied_index = static_cast<int64_t>(i);
      }
    }
  }
  // Saved activations: one store per rank, shared by its chunks (keep = none).
  MF_ASSIGN_OR_RETURN(
      std::shared_ptr<model::ActivationStore> store,
      MakeActivationStore(config, options.groups ? &options.groups->mapping() : nullptr,
                          groups.world_rank, state->device,
                          options.groups ? &options.groups->world() : nullptr));
  for (auto& chunk : state->chunks) chunk->set_activation_store(store);
  for (bool is_moe : state->spec.moe_layer) state->num_moe_layers += is_moe;
  state->micro_batch = train.micro_batch_size();
  MF_RETURN_IF_ERROR(state->MakePipeline());
  state->params.Initialize(train.seed());
  if (!config.model().init_from().empty()) {
    MF_RETURN_IF_ERROR(
        hf::ImportHuggingFace(config.model().init_from(), state->spec, config, &state->params));
  }

  const auto& opt = config.optimizer();
  optim::AdamWOptions adam;
  adam.beta1 = opt.beta1();
  adam.beta2 = opt.beta2();
  adam.eps = opt.eps();
  adam.weight_decay = opt.weight_decay();
  // Gradients (and master weights) in contiguous buffers per reduction group, cut into buckets.
  parallel::GradSyncOptions sync_options;
  sync_options.zero1 = config.parallel().zero1() && options.groups != nullptr;
  sync_options.bucket_elements = config.parallel().grad_bucket_elements();
  const auto& compression = config.compression();
  if (compression.method() == "ef21") {
    sync_options.ef21.enabled = true;
    MF_ASSIGN_OR_RETURN(sync_options.ef21.compressor.kind,
                        parallel::ParseCompressor(compression.compressor()));
    sync_options.ef21.compressor.block = compression.block_size();
    sync_options.ef21.compressor.topk_fraction = compression.topk_fraction();
    sync_options.ef21.warm_start_steps = compression.warm_start_steps();
    sync_options.ef21.reanchor_every = compression.reanchor_every();
    sync_options.ef21.rank_weights.assign(compression.rank_weights().begin(),
                                          compression.rank_weights().end());
  }
  // With compression every parameter starts a compressor block, so the blocks (and what Top-K or
  // a block scale sees) do not depend on which parameters share the buffer, e.g. per stage. Every
  // parameter also starts 64 elements in (256 B of f32, 128 B of bf16): GEMM libraries and vector
  // loads pick their fast paths only for aligned operands.
  const int64_t block = sync_options.ef21.enabled ? compression.block_size() : 1;
  state->params.Flatten(parallel::GradSync::Alignment(groups.sync) * block,
                        std::lcm<int64_t>(block, 64), state->device, state->act_dtype);
  state->sync = std::make_unique<parallel::GradSync>(&state->params, groups.sync, sync_options);
  if (sync_options.zero1) {
    state->sharded_optimizer = std::make_unique<optim::ShardedAdamW>(state->sync.get(), adam);
  } else {
    state->optimizer = std::make_unique<optim::AdamW>(&state->params, adam);
  }
  if (opt.name() == "spam" || opt.name() == "stable_spam") {
    optim::SpamOptions spam;
    spam.kind = opt.name() == "spam" ? optim::SpamKind::kSpam : optim::SpamKind::kStableSpam;
    spam.reset_interval = opt.spam_reset_interval();
    spam.theta = opt.spam_theta();
    spam.clip_delay = opt.spam_clip_delay();
    spam.warmup_steps = opt.spam_warmup_steps();
    spam.gamma1 = opt.spam_gamma1();
    spam.gamma2 = opt.spam_gamma2();
    spam.gamma3 = opt.spam_gamma3();
    spam.eps = opt.eps();
    state->spam = std::make_unique<optim::SpamTransform>(spam, state->sync.get(), groups.sync);
  }
  MF_RETURN_IF_ERROR(state->MakeFp8());
  state->schedule.kind = opt.schedule();
  state->schedule.lr = opt.lr();
  state->schedule.min_lr = opt.min_lr();
  state->schedule.warmup_steps = opt.warmup_steps();
  state->schedule.total_steps = train.steps();
  state->schedule.decay_fraction = opt.decay_fraction();

  const auto& rw = config.reweighting();
  optim::ReweightingOptions reweighting;
  MF_ASSIGN_OR_RETURN(reweighting.strategy, optim::ParseStrategy(rw.strategy()));
  reweighting.temperature = rw.temperature();
  reweighting.warmup_steps = rw.warmup_steps();
  reweighting.warmup_temperature = rw.warmup_temperature();
  reweighting.population = rw.population() == "microbatch" ? optim::Population::kMicroBatch
                                                             : optim::Population::kGlobal;
  state->reweighter = std::make_unique<optim::SampleReweighter>(reweighting);

  if (options.write_metrics && groups.world_rank == 0) {
    const bool resuming = config.checkpoint().resume() || options.resume;
    MF_RETURN_IF_ERROR(state->metrics.Open(options.run_dir, "metrics.jsonl", resuming));
    // The peak MFU is measured against, and the files that explain the run directory.
    state->peak = ResolvePeak(config.train().peak_tflops(), state->device, state->act_dtype);
    RunInfo info;
    info.command = options.command_line;
    info.world_size = options.groups == nullptr ? 1 : options.groups->world().size();
    info.layout = options.layout_description;
    info.device = state->device;
    info.peak = state->peak;
    info.model_flops_per_token = TrainingFlopsPerToken(state->spec, config.train().seq_len());
    info.flops_per_token_by_family =
        TrainingFlopsPerTokenByFamily(state->spec, config.train().seq_len());
    info.tokens_per_step =
        static_cast<int64_t>(config.train().global_batch_size()) * config.train().seq_len();
    info.params = CountParameters(state->spec);
    MF_RETURN_IF_ERROR(WriteRunFiles(options.run_dir, config,
                                     options.groups ? &options.groups->mapping() : nullptr, info));
    if (config.logging().tensorboard()) {
      MF_ASSIGN_OR_RETURN(state->tensorboard, TensorBoardWriter::Open(options.run_dir));
    }
  }
  // Every rank traces logging.trace_steps into RUN_DIR/trace/rank-NNNNN.json.
  MF_ASSIGN_OR_RETURN(const std::optional<config::StepRange> traced,
                      config::ParseTraceSteps(config.logging().trace_steps()));
  if (traced) {
    Tracer::Get().Configure(
        absl::StrFormat("%s/trace/rank-%05d.json", options.run_dir, groups.world_rank),
        groups.world_rank, options.groups != nullptr ? options.groups->world().size() : 1,
        traced->first, traced->last);
  } else {
    Tracer::Get().Disable();
  }
  return std::unique_ptr<Trainer>(new Trainer(std::move(state)));
}

namespace {

// Reduces values over `comm` (f32 on the wire); identity without a group.
absl::Status ReduceOver(parallel::Communicator* comm, std::vector<float>* values,
                        parallel::ReduceOp op = parallel::ReduceOp::kSum) {
  if (parallel::IsSingleRank(comm) || values->empty()) return absl::OkStatus();
  Tensor t = Tensor::FromVector(*values, {static_cast<int64_t>(values->size())});
  MF_RETURN_IF_ERROR(parallel::WaitFor(comm->AllReduce(&t, {.op = op})));
  *values = t.ToVector();
  return absl::OkStatus();
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// What one optimizer step carries from phase to phase.
struct Trainer::StepWork {
  StepResult result;
  std::chrono::steady_clock::time_point start, model_start, update_start;
  std::vector<model::MicroBatch> batches;
  // The forward passes' loss sums on the device (model::DeviceSum), read once in ReduceStatistics.
  Tensor device_sums;
  // This rank's sums over its samples and MoE layers until ReduceStatistics makes them global.
  double weighted_sum = 0, plain_sum = 0, aux_sum = 0, z_sum = 0;
  float min_u = INFINITY, max_u = 0;
  int64_t samples = 0;  // sequences whose loss this rank's head computed
  double z = 0;  // the reweighting normaliser Z of the step (docs/FORMULAS.md §6.4)
  float grad_scale = 1;  // 1/Z × the clip factor, applied by the optimizer
  bool traced = false;   // a step of logging.trace_steps (core/trace.h)
  // Profiled for the config or SetProfiling, so StepResult::profile reports it (a traced step is
  // profiled for its gpu spans alone otherwise).
  bool profile_reported = false;
};

absl::Status Trainer::SetMicroBatchSize(int64_t micro_batch) {
  State& st = *state_;
  const int64_t global_batch = st.config.train().global_batch_size();
  if (micro_batch < 1 || global_batch % (micro_batch * st.groups.dp_size) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("micro-batch size ", micro_batch, " does not divide the global batch ",
                     global_batch, " over dp ", st.groups.dp_size));
  }
  st.micro_batch = micro_batch;
  return st.MakePipeline();
}

void Trainer::SetForceBalancedRouting(bool balanced) {
  for (auto& chunk : state_->chunks) {
    for (model::MoeLayer* layer : chunk->moe_layers()) layer->set_force_balanced_routing(balanced);
  }
  state_->spec.moe.force_balanced_routing = balanced;
}

absl::StatusOr<StepResult> Trainer::Step(int64_t step) {
  StepWork w;
  FlightRecorder::Get().SetStep(step);
  // train.verify_every (trainer_reliability.cc): a first run of the step as the reference.
  const auto verify_start = std::chrono::steady_clock::now();
  MF_ASSIGN_OR_RETURN(const std::vector<uint64_t> reference, VerifyReference(step));
  const double verify_s = reference.empty() ? 0.0 : SecondsSince(verify_start);
  // Each phase is also the flight recorder's position (core/flight_recorder.h).
  FlightRecorder& flight = FlightRecorder::Get();
  flight.EnterStepPhase("begin step");
  MF_RETURN_IF_ERROR(BeginStep(step, &w));
  MF_RETURN_IF_ERROR(GatherBatch(&w));
  MF_RETURN_IF_ERROR(RunSchedule(&w));
  flight.EnterStepPhase("gradient reductions");
  MF_RETURN_IF_ERROR(FinishGradients());
  MF_RETURN_IF_ERROR(InjectFaults(step));
  flight.EnterStepPhase("loss statistics");
  MF_RETURN_IF_ERROR(ReduceStatistics(&w));
  flight.EnterStepPhase("gradient norm");
  MF_RETURN_IF_ERROR(ClipGradients(&w));
  w.result.verify_s = verify_s;
  if (!reference.empty()) {
    MF_ASSIGN_OR_RETURN(const std::vector<uint64_t> digest, StepDigest(w.device_sums, w.result));
    MF_RETURN_IF_ERROR(CheckVerify(reference, digest, &w.result));
  }
  CheckAnomalies(&w);
  MF_RETURN_IF_ERROR(AgreeOnStep(&w.result));  // trainer_reliability.cc
  flight.EnterStepPhase("optimizer update");
  MF_RETURN_IF_ERROR(Update(&w));
  flight.EnterStepPhase("expert load");
  MF_RETURN_IF_ERROR(RecordExpertLoad(&w));
  flight.EnterStepPhase("end of step");
  MF_RETURN_IF_ERROR(EndStep(&w));
  MF_RETURN_IF_ERROR(EndTrace(&w));
  return w.result;
}

void Trainer::SetProfiling(bool on) { state_->profile_all = on; }

absl::StatusOr<std::vector<uint64_t>> Trainer::RunReference(int64_t step) {
  StepWork w;
  MF_RETURN_IF_ERROR(BeginStep(step, &w));
  MF_RETURN_IF_ERROR(GatherBatch(&w));
  MF_RETURN_IF_ERROR(RunSchedule(&w));
  MF_RETURN_IF_ERROR(FinishGradients());
  MF_RETURN_IF_ERROR(ReduceStatistics(&w));
  MF_RETURN_IF_ERROR(ClipGradients(&w));
  return StepDigest(w.device_sums, w.result);
}

absl::Status Trainer::BeginStep(int64_t step, StepWork* w) {
  State& st = *state_;
  w->traced = Tracer::Get().BeginStep(step);
  w->start = std::chrono::steady_clock::now();
  w->result.step = step;
  w->result.lr = optim::LearningRate(st.schedule, step);
  const auto& listed = st.config.logging().profile_steps();
  w->profile_reported =
      st.profile_all || std::find(listed.begin(), listed.end(), step) != listed.end();
  st.profiling = w->profile_reported || w->traced;
  if (st.profiling) {
    if (st.profiler == nullptr) {
      MF_ASSIGN_OR_RETURN(st.profiler, Profiler::Create(st.device));
    }
    st.profiler->set_record_spans(w->traced);
    MF_RETURN_IF_ERROR(st.profiler->BeginStep(*st.stream));
  }
  // Communication timing starts with the step (what set-up or an earlier caller did is dropped).
  if (st.options.groups != nullptr) {
    MF_RETURN_IF_ERROR(st.options.groups->TakeCommTimes().status());
  }
  const TraceSpan span(TraceTrack::kHost, "zero gradients");
  ProfileScope timed(st.profiler_if_profiling(), OpFamily::kOptimizer, *st.stream);
  st.params.ZeroGrads(*st.stream);
  st.sync->BeginStep(step);
  st.reweighter->BeginStep(step);
  for (auto& chunk : st.chunks) {
    for (model::MoeLayer* layer : chunk->moe_layers()) layer->ResetLoad();
  }
  return absl::OkStatus();
}

absl::Status Trainer::GatherBatch(StepWork* w) {
  State& st = *state_;
  const TraceSpan span(TraceTrack::kHost, "data loading");
  const RankGroups& g = st.groups;
  const int64_t seq = st.config.train().seq_len();
  w->batches = LocalMicroBatches(
      *st.samples, w->result.step,
      {seq, st.config.train().global_batch_size(), st.micro_batch, g.dp_size, g.dp_rank},
      LocalPositions(seq, g.model.cp_size(), g.cp_rank), *st.stream);
  w->result.data_s = SecondsSince(w->start);
  return absl::OkStatus();
}

absl::Status Trainer::RunSchedule(StepWork* w) {
  State& st = *state_;
  const int64_t global_batch = st.config.train().global_batch_size();
  const int64_t seq = st.config.train().seq_len();
  const float micro = static_cast<float>(st.micro_batch);
  w->model_start = std::chrono::steady_clock::now();
  model::StepContext context;
  context.stream = st.stream;
  context.act_dtype = st.act_dtype;
  context.ResetDeviceSums();
  context.profiler = st.profiler_if_profiling();
  // Only a reweighting that weighs samples by their loss needs the losses on the host before the
  // backward; otherwise every sample's seed is 1 and the losses stay on the device.
  context.sample_losses_on_host = st.reweighter->options().strategy != optim::Strategy::kNone;
  w->device_sums = context.device_sums;
  PipelineCallbacks callbacks;
  // Aux/z seeds are pre-multiplied by Z_ref so that dividing the whole gradient by Z leaves them
  // exact whenever Z = Z_ref (uniform weights).
  callbacks.body_seeds.aux_grad_scale =
      static_cast<float>(st.z_ref() / std::max<int64_t>(st.aux_units(), 1));
  callbacks.body_seeds.z_grad_scale = static_cast<float>(st.z_ref() / (global_batch * seq));
  callbacks.head_seeds = [&](int, const model::ForwardStats& stats) {
    model::BackwardSeeds seeds = callbacks.body_seeds;
    w->samples += static_cast<int64_t>(stats.sample_tokens.size());
    if (!context.sample_losses_on_host) {
      seeds.d_sample_loss.assign(stats.sample_tokens.size(), 1.0f);
      w->min_u = std::min(w->min_u, 1.0f);
      w->max_u = std::max(w->max_u, 1.0f);
      return seeds;
    }
    if (st.microbatch_population()) {
      // Reference semantics (docs/FORMULAS.md §6.6): softmax weights within the micro-batch;
      // scaled by the micro-batch size so that Z = Σuᵢ = global batch, as in the global population.
      for (float wi : st.reweighter->MicroBatchWeightsForStep(stats.sample_losses)) {
        seeds.d_sample_loss.push_back(wi * micro);
      }
    } else {
      for (float loss : stats.sample_losses) {
        seeds.d_sample_loss.push_back(st.reweighter->Weight(loss));
      }
    }
    for (size_t i = 0; i < stats.sample_losses.size(); ++i) {
      w->weighted_sum += static_cast<double>(seeds.d_sample_loss[i]) * stats.sample_losses[i];
      w->plain_sum += stats.sample_losses[i];
      w->min_u = std::min(w->min_u, seeds.d_sample_loss[i]);
      w->max_u = std::max(w->max_u, seeds.d_sample_loss[i]);
    }
    return seeds;
  };
  // Each chunk's last backward completes its gradients: reduce their buckets while the rest of the
  // backward goes on. A tied embedding shared across stages waits for its two copies' sum.
  absl::Status sync_status;
  callbacks.grads_ready = [&](int64_t first, int64_t last) {
    auto mark = [&](int64_t a, int64_t b) {
      if (a < b && sync_status.ok()) sync_status = st.sync->MarkReady(a, b);
    };
    if (st.tied_index >= first && st.tied_index < last) {
      mark(first, st.tied_index);
      mark(st.tied_index + 1, last);
    } else {
      mark(first, last);
    }
  };
  context.fp8 = st.fp8.get();
  MF_RETURN_IF_ERROR(st.pipeline->Run(context, w->batches, callbacks));
  // The delayed FP8 recipe's one update per step: amaxes over the stage, histories, scales.
  if (st.fp8 != nullptr) MF_RETURN_IF_ERROR(st.fp8->EndStep(*st.stream));
  return sync_status;
}

absl::Status Trainer::FinishGradients() {
  State& st = *state_;
  NvtxRange range("gradient reductions");
  const TraceSpan span(TraceTrack::kHost, "gradient reductions");
  ProfileScope timed(st.profiler_if_profiling(), OpFamily::kCommunication, *st.stream);
  if (st.tied_index >= 0) {
    Tensor& grad = st.params.params()[st.tied_index]->grad;
    MF_RETURN_IF_ERROR(Annotate(parallel::WaitFor(st.groups.embedding->AllReduce(&grad, {})),
                                "tied embedding gradient over the embedding group"));
    MF_RETURN_IF_ERROR(st.sync->MarkReady(st.tied_index, st.tied_index + 1));
  }
  return st.sync->Finish();
}

absl::Status Trainer::ReduceStatistics(StepWork* w) {
  State& st = *state_;
  const RankGroups& g = st.groups;
  const int64_t global_batch = st.config.train().global_batch_size();
  const int64_t seq = st.config.train().seq_len();
  const bool microbatch_population = st.microbatch_population();
  const TraceSpan span(TraceTrack::kHost, "loss statistics");
  // The step's one read of the forward passes' device sums (a wait: the backward is done).
  const std::vector<float> device = w->device_sums.ToVector();
  w->aux_sum = device[model::kAuxLossSum];
  w->z_sum = device[model::kZLossSum];
  const bool uniform = st.reweighter->options().strategy == optim::Strategy::kNone;
  if (uniform) {
    // Every seed was 1: the weighted and the plain loss sums agree, and Z counts the samples.
    w->weighted_sum = w->plain_sum = device[model::kSampleLossSum];
  }
  const double local_z = uniform ? static_cast<double>(w->samples)
                                 : st.reweighter->LocalNormaliser();
  // Per-sample values (Z, the loss sums, the loss and weight ranges) are the same on every rank of
  // a TP×CP group, so they add over DP; per-token ones (aux, z) add over TP×CP×DP.
  std::vector<float> sums = {static_cast<float>(microbatch_population ? 0.0 : local_z),
                             static_cast<float>(w->weighted_sum), static_cast<float>(w->plain_sum)};
  std::vector<float> token_sums = {static_cast<float>(w->aux_sum), static_cast<float>(w->z_sum)};
  std::vector<float> mins = {st.reweighter->LocalMin(), w->min_u};
  std::vector<float> maxs = {st.reweighter->LocalMax(), w->max_u};
  // Under PP only the last stage has per-sample values (the others add zeros and ±inf) and every
  // stage has its layers' aux and z parts: both reduce over the stages too.
  for (parallel::Communicator* comm : {g.dp, g.pp}) {
    MF_RETURN_IF_ERROR(ReduceOver(comm, &sums));
    MF_RETURN_IF_ERROR(ReduceOver(comm, &mins, parallel::ReduceOp::kMin));
    MF_RETURN_IF_ERROR(ReduceOver(comm, &maxs, parallel::ReduceOp::kMax));
  }
  for (parallel::Communicator* comm : {g.tp_cp_dp, g.pp}) {
    MF_RETURN_IF_ERROR(ReduceOver(comm, &token_sums));
  }
  const bool sample_reduced = g.dp != nullptr || g.pp != nullptr;
  w->z = microbatch_population ? st.z_ref()
         : !sample_reduced     ? local_z
                               : static_cast<double>(sums[0]);
  st.reweighter->EndStep(w->z, mins[0], maxs[0]);
  if (sample_reduced) {
    w->weighted_sum = sums[1];
    w->plain_sum = sums[2];
  }
  if (g.tp_cp_dp != nullptr || g.pp != nullptr) {
    w->aux_sum = token_sums[0];
    w->z_sum = token_sums[1];
  }
  StepResult& r = w->result;
  const int64_t aux_units = st.aux_units();
  r.normaliser = w->z;
  r.max_weight_ratio = mins[1] > 0 ? maxs[1] / mins[1] : 0;
  r.weighted_lm_loss = w->weighted_sum / w->z;
  r.lm_loss = w->plain_sum / static_cast<double>(global_batch);
  r.aux_loss = aux_units > 0 && st.spec.moe.aux_type != model::AuxLossType::kNone
                   ? w->aux_sum / static_cast<double>(aux_units)
                   : 0.0;
  r.z_loss = w->z_sum / static_cast<double>(global_batch * seq);
  r.loss = r.weighted_lm_loss + r.aux_loss + r.z_loss;
  r.tokens = global_batch * seq;
  return absl::OkStatus();
}

absl::Status Trainer::ClipGradients(StepWork* w) {
  State& st = *state_;
  StepResult& r = w->result;
  // Σ g² of the summed (not yet normalised) gradients: one reduction on the device, one copy.
  double sum_squares = 0;
  {
    const TraceSpan span(TraceTrack::kHost, "gradient norm");
    ProfileScope timed(st.profiler_if_profiling(), OpFamily::kOptimizer, *st.stream);
    MF_ASSIGN_OR_RETURN(sum_squares, st.sync->GlobalSumOfSquares());
  }
  r.model_s = SecondsSince(w->model_start);
  w->update_start = std::chrono::steady_clock::now();
  // The deferred normalisation (docs/FORMULAS.md §6.4) and the clipping are one factor that the
  // optimizer applies as it reads each gradient: no pass over the gradients of their own.
  const double inv_z =
      (r.step == st.options.spike_step ? st.options.spike_scale : 1.0) / w->z;
  r.grad_norm = std::sqrt(sum_squares) * inv_z;
  const double clip = optim::ClipScale(r.grad_norm, st.config.optimizer().grad_clip());
  w->grad_scale = static_cast<float>(inv_z * clip);
  r.grad_bytes_sent = st.sync->bytes_sent();
  r.grad_bytes_uncompressed = st.sync->uncompressed_bytes();
  return absl::OkStatus();
}

void Trainer::CheckAnomalies(StepWork* w) {
  State& st = *state_;
  StepResult& r = w->result;
  // A non-finite loss or norm, or a spike over the EMA, skips the update (logged). Every rank sees
  // the same reduced values, so all ranks skip together.
  const float spike = st.config.train().max_loss_spike();
  const bool finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm);
  const bool spiked = spike > 0 && st.ema_steps >= 10 && r.lm_loss > spike * st.loss_ema;
  r.skipped = !finite || spiked;
  // A non-finite gradient has poisoned the error-feedback state: drop it so the next step anchors
  // (every rank sees the same reduced norm, so the group agrees).
  if (!std::isfinite(r.grad_norm)) st.sync->ResetState();
}

absl::Status Trainer::Update(StepWork* w) {
  State& st = *state_;
  StepResult& r = w->result;
  if (r.skipped) return absl::OkStatus();
  NvtxRange range("optimizer");
  const TraceSpan span(TraceTrack::kHost, "optimizer update");
  ProfileScope timed(st.profiler_if_profiling(), OpFamily::kOptimizer, *st.stream);
  // The factor travels to the device as a scalar the optimizer kernels read (an upload, no wait).
  Tensor scale = st.Upload(Tensor::FromVector({w->grad_scale}, {1}));
  float lr = static_cast<float>(r.lr);
  if (st.spam) {
    // SPAM / Stable-SPAM rewrite the owned gradients into the final g (the scale included) and
    // AdamW then reads them with a scale of 1; a reset zeroes its moments first.
    const optim::SpamOptions& spam = st.spam->options();
    const int64_t t = 1 + (st.sharded_optimizer ? st.sharded_optimizer->step_count()
                                                : st.optimizer->step_count());
    const bool reset = optim::SpamResetsAt(spam, t);
    std::vector<Tensor> views;
    std::vector<Tensor*> second_moments;
    if (st.sharded_optimizer) {
      for (size_t i = 0; i < st.sharded_optimizer->num_buckets(); ++i) {
        if (reset) st.sharded_optimizer->m(i).SetZero(*st.stream);
        if (reset) st.sharded_optimizer->v(i).SetZero(*st.stream);
        second_moments.push_back(&st.sharded_optimizer->v(i));
      }
    } else {
      if (reset) {
        for (int64_t i = 0; i < st.optimizer->num_params(); ++i) {
          st.optimizer->m(i).SetZero(*st.stream);
          st.optimizer->v(i).SetZero(*st.stream);
        }
      }
      const std::vector<Tensor*> owned = st.sync->OwnedGrads();
      for (size_t i = 0; i < owned.size(); ++i) {
        const parallel::GradBucket& bucket = st.sync->buckets()[i];
        views.push_back(st.optimizer->flat_v(bucket.buffer)
                            .Slice(bucket.shard_begin, bucket.shard_begin + owned[i]->numel()));
      }
      for (Tensor& view : views) second_moments.push_back(&view);
    }
    MF_RETURN_IF_ERROR(st.spam->Apply(t, scale, second_moments, *st.stream));
    lr *= optim::SpamLrScale(spam, t);
    scale = st.Upload(Tensor::FromVector({1.0f}, {1}));
  }
  if (st.sharded_optimizer) {
    MF_RETURN_IF_ERROR(st.sharded_optimizer->Step(lr, scale, *st.stream));
    st.params.RefreshCompute(*st.stream);  // the bf16 weights of the next forward
  } else {
    // One fused pass per flat buffer, which also writes the bf16 weights of the next forward.
    st.optimizer->Step(lr, scale, *st.stream);
  }
  st.loss_ema = st.ema_steps == 0 ? r.lm_loss : 0.9 * st.loss_ema + 0.1 * r.lm_loss;
  ++st.ema_steps;
  return absl::OkStatus();
}

absl::Status Trainer::RecordExpertLoad(StepWork* w) {
  State& st = *state_;
  const RankGroups& g = st.groups;
  StepResult& r = w->result;
  const TraceSpan span(TraceTrack::kHost, "expert load");
  // Expert counts of every MoE layer of the model: each rank fills its stage's layers, and the
  // counts add (exactly, i64) over the ranks that routed other tokens (TP×CP×DP) and over stages.
  const int64_t e = st.spec.moe.num_experts, width = e + 2;  // loads, dropped, dispatcher bytes
  Tensor counts = Tensor::Zeros({std::max(1, st.num_moe_layers) * width}, DType::kI64);
  for (auto& chunk : st.chunks) {
    int index = chunk->first_moe_index();
    for (model::MoeLayer* layer : chunk->moe_layers()) {
      int64_t* c = counts.data<int64_t>() + index++ * width;
      std::copy(layer->load().begin(), layer->load().end(), c);
      c[e] = layer->dropped();
      c[e + 1] = layer->dispatch_bytes();
    }
  }
  for (parallel::Communicator* comm : {g.tp_cp_dp, g.pp}) {
    if (comm != nullptr && st.num_moe_layers > 0) {
      MF_RETURN_IF_ERROR(parallel::WaitFor(comm->AllReduce(&counts, {})));
    }
  }
  for (int l = 0; l < st.num_moe_layers; ++l) {
    const int64_t* c = counts.data<int64_t>() + l * width;
    r.expert_tokens.emplace_back(c, c + e);
    r.tokens_dropped += c[e];
    r.dispatch_bytes += c[e + 1];
    double total = 0, max_load = 0;
    for (int64_t i = 0; i < e; ++i) {
      total += static_cast<double>(c[i]);
      max_load = std::max(max_load, static_cast<double>(c[i]));
    }
    r.expert_imbalance.push_back(total > 0 ? max_load / (total / e) : 0);
  }
  if (st.spec.moe.expert_bias && !r.skipped) {
    for (auto& chunk : st.chunks) {
      int index = chunk->first_moe_index();
      for (model::MoeLayer* layer : chunk->moe_layers()) {
        const int64_t* c = counts.data<int64_t>() + index++ * width;
        layer->UpdateExpertBias(std::vector<float>(c, c + e),
                                st.config.model().moe().expert_bias_rate());
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::EndStep(StepWork* w) {
  State& st = *state_;
  // The step ends when the device has finished its update, so step times include all its work.
  st.stream->Synchronize();
  // The step's communication per group kind (its timing events are complete after the wait).
  if (st.options.groups != nullptr) {
    MF_ASSIGN_OR_RETURN(const parallel::CommTimes comm, st.options.groups->TakeCommTimes());
    for (const auto& [kind, time] : comm) {
      w->result.comm_s[kind] = time.total_s;
      w->result.comm_exposed_s[kind] = time.exposed_s;
    }
  }
  w->result.device_peak_bytes = static_cast<int64_t>(AllocatorFor(st.device).peak_bytes());
  MF_ASSIGN_OR_RETURN(const PipelineExecutor::PhaseTimes phases, st.pipeline->LastPhaseTimes());
  // Forward and backward as compute: the exchanges inside the layers (TP/SP, CP, the token
  // dispatcher's EP/ETP) run within those passes, so the part of them the compute waited for is
  // moved out (shared between forward and backward in proportion to their times) and reported as
  // exposed communication; the data-parallel buckets, pipeline transfers and statistics are
  // waited for outside the passes already.
  double in_layer_exposed = 0;
  for (const auto& [kind, exposed] : w->result.comm_exposed_s) {
    if (kind == "tp" || kind == "cp" || kind == "tp-cp" || kind == "ep" || kind == "etp" ||
        kind == "etp-ep") {
      in_layer_exposed += exposed;
    }
  }
  const double passes = phases.forward_s + phases.backward_s;
  const double keep = passes > 0 ? std::max(0.0, passes - in_layer_exposed) / passes : 0;
  w->result.forward_s = phases.forward_s * keep;
  w->result.backward_s = phases.backward_s * keep;
  w->result.update_s = SecondsSince(w->update_start);
  w->result.step_time_s = SecondsSince(w->start);
  if (st.profiling) {
    MF_ASSIGN_OR_RETURN(w->result.profile, st.profiler->EndStep(*st.stream));
    st.profiling = false;
  }
  return absl::OkStatus();
}

absl::Status Trainer::EndTrace(StepWork* w) {
  if (!w->traced) return absl::OkStatus();
  std::optional<StepProfile>& profile = w->result.profile;
  if (profile) {
    Tracer::Get().AddProfile(*profile);
    profile->spans.clear();
    if (!w->profile_reported) profile.reset();
  }
  return Tracer::Get().EndStep();
}

absl::StatusOr<TrainSummary> Trainer::RunSteps() {
  State& st = *state_;
  const auto& train = st.config.train();
  TrainSummary summary;
  summary.run_dir = st.options.run_dir;
  summary.params = CountParameters(st.spec);
  summary.model_flops_per_token = TrainingFlopsPerToken(st.spec, train.seq_len());
  Progress progress(st.options.live_progress, st.config.logging().log_every(), train.steps());
  std::vector<double> recent;
  const int world_size = st.options.groups == nullptr ? 1 : st.options.groups->world().size();
  std::vector<StepResult> steps_run;  // for the summary's medians (profiles dropped)
  std::vector<double> mfus;
  const auto& ck = st.config.checkpoint();
  const bool saving = !ck.dir().empty();
  int64_t first_step = 0;
  if (ck.resume() || st.options.resume) {
    MF_ASSIGN_OR_RETURN(first_step, Resume());
    if (first_step > 0) summary.resumed_from = first_step;
  }
  // A failed save stops the run (on_error: stop) or is reported and training goes on (warn).
  auto save_failed = [&](const absl::Status& status) -> absl::Status {
    if (status.ok() || ck.on_error() == "stop") return status;
    std::fprintf(stderr, "warning: %s; training continues (checkpoint.on_error: warn)\n",
                 std::string(status.message()).c_str());
    return absl::OkStatus();
  };
  const auto start = std::chrono::steady_clock::now();
  if (st.watchdog) st.watchdog->Arm(true);  // hangs count from here (core/train/watchdog.h)
  for (int64_t step = first_step; step < train.steps(); ++step) {
    if (step == st.options.fail_at_step) {
      return absl::InternalError(absl::StrCat("injected failure at step ", step,
                                              " (MOEFOLD_INJECT_FAILURE)"));
    }
    MF_ASSIGN_OR_RETURN(StepResult r, Step(step));
    // SIGTERM / SIGINT on any rank: every rank stops after this step, with a checkpoint.
    const bool preempted = r.stop_requested;
    summary.preempted = preempted;
    StepEvaluation evaluation;
    if (!preempted) {  // a preempted run leaves at once (its next evaluation is not due yet)
      MF_ASSIGN_OR_RETURN(evaluation, EvaluateAfterStep(step));
      if (evaluation.valid) summary.eval_loss = evaluation.valid->loss;
      if (evaluation.test) summary.test_loss = evaluation.test->loss;
    }
    // Checkpoints at the step boundary: finish a save whose files are written, then start the
    // next one when due (every `every` steps, at the last step, and where the run is told to stop).
    st.checkpoint_stall_s = 0;
    const bool stopping = st.options.stop_after_steps == step + 1 || preempted;
    if (saving) {
      // Waiting for a slow disk is not a hang: the watchdog pauses (collectives keep their own
      // timeout, parallel.comm_timeout_s).
      if (st.watchdog) st.watchdog->Arm(false);
      MF_RETURN_IF_ERROR(save_failed(PollSave(/*wait=*/false)));
      const bool due = (ck.every() > 0 && (step + 1) % ck.every() == 0) ||
                       step + 1 == train.steps() || stopping;
      if (due) MF_RETURN_IF_ERROR(save_failed(BeginSave(step + 1)));
      if (st.watchdog) st.watchdog->Arm(true);
    }
    summary.steps = step + 1;
    summary.skipped_steps += r.skipped;
    summary.verified_steps += r.verify_s > 0;
    summary.verify_mismatches += !r.verify_mismatch_ranks.empty();
    summary.tokens += r.tokens;
    if (step == first_step) summary.first_loss = r.lm_loss;
    recent.push_back(r.lm_loss);
    if (recent.size() > 10) recent.erase(recent.begin());
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tokens_per_s = r.tokens / std::max(r.step_time_s, 1e-9);
    MF_RETURN_IF_ERROR(GatherRankFigures(&r));
    const double mfu = st.peak.tflops > 0 ? Mfu(summary.model_flops_per_token, tokens_per_s,
                                                 world_size, st.peak.tflops * 1e12)
                                          : NAN;
    steps_run.push_back(r);
    steps_run.back().profile.reset();
    mfus.push_back(mfu);

    JsonLine line;
    line.Add("step", step)
        .Add("loss", r.loss)
        .Add("lm_loss", r.lm_loss)
        .Add("weighted_lm_loss", r.weighted_lm_loss)
        .Add("aux_loss", r.aux_loss)
        .Add("z_loss", r.z_loss)
        .Add("grad_norm", r.grad_norm)
        .Add("lr", r.lr)
        .Add("tokens", summary.tokens)
        .Add("tokens_per_s", tokens_per_s)
        .Add("step_time_s", r.step_time_s)
        .Add("data_s", r.data_s)
        .Add("model_s", r.model_s)
        .Add("update_s", r.update_s)
        .Add("forward_s", r.forward_s)
        .Add("backward_s", r.backward_s)
        .Add("mfu", mfu)
        .Add("peak_tflops", st.peak.tflops > 0 ? st.peak.tflops : NAN)
        .Add("tokens_per_s_per_device", tokens_per_s / world_size)
        .Add("rank_step_time_s", r.rank_step_time_s)
        .Add("rank_device_peak_bytes", r.rank_device_peak_bytes)
        .Add("model_tflops_per_s", summary.model_flops_per_token * tokens_per_s / 1e12)
        .Add("reweight_normaliser", r.normaliser)
        .Add("reweight_max_ratio", r.max_weight_ratio)
        .Add("expert_load_max_over_mean", r.expert_imbalance)
        .Add("expert_tokens", r.expert_tokens)
        .Add("tokens_dropped", r.tokens_dropped)
        .Add("dispatch_bytes", r.dispatch_bytes)
        .Add("host_peak_bytes", static_cast<int64_t>(CpuMemory().peak_bytes()))
        .Add("device_peak_bytes", r.device_peak_bytes)
        .Add("grad_bytes_sent", r.grad_bytes_sent)
        .Add("grad_bytes_uncompressed", r.grad_bytes_uncompressed)
        .Add("comm_s", JsonObject(r.comm_s))
        .Add("comm_exposed_s", JsonObject(r.comm_exposed_s))
        .Add("checkpoint_stall_s", st.checkpoint_stall_s)
        .Add("verify_s", r.verify_s)
        .Add("verify_mismatch_ranks", std::vector<int64_t>(r.verify_mismatch_ranks.begin(),
                                                           r.verify_mismatch_ranks.end()))
        .Add("skipped", r.skipped);
    AddEvaluation(evaluation, &line);
    st.metrics.Write(line);
    if (st.tensorboard) {
      MF_RETURN_IF_ERROR(st.tensorboard->WriteScalars(step, TensorBoardScalars(line)));
    }
    if (r.profile) {
      st.profiles.push_back(*r.profile);
      if (st.metrics.is_open()) {
        if (!st.profile_file.is_open()) {
          MF_RETURN_IF_ERROR(st.profile_file.Open(st.options.run_dir, "profile.jsonl"));
        }
        st.profile_file.Write(ProfileLine(step, *r.profile));
      }
    }
    if (r.skipped) {
      std::fprintf(stderr, "step %lld skipped: loss %g grad_norm %g\n",
                   static_cast<long long>(step), r.loss, r.grad_norm);
    }
    if (st.options.print_progress) progress.Update(step, r.lm_loss, tokens_per_s, elapsed);
    if (stopping) break;
  }
  progress.Finish();
  if (st.watchdog) st.watchdog->Arm(false);
  if (saving) MF_RETURN_IF_ERROR(save_failed(FinishSave()));
  summary.last_checkpoint = st.last_checkpoint;
  summary.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  summary.tokens_per_s = summary.tokens / std::max(summary.wall_s, 1e-9);
  double sum = 0;
  for (double v : recent) sum += v;
  summary.final_loss = recent.empty() ? 0 : sum / recent.size();
  if (!st.profiles.empty()) {
    summary.profiled_steps = static_cast<int64_t>(st.profiles.size());
    summary.profile_table =
        FormatProfileTable(SumProfiles(st.profiles), static_cast<int>(st.profiles.size()));
  }
  SummariseSteps(steps_run, mfus, &summary);
  summary.world_size = world_size;
  summary.tokens_per_s_per_device = summary.tokens_per_s / world_size;
  summary.peak_tflops = st.peak.tflops;
  summary.peak_source = st.peak.source;
  if (st.metrics.is_open()) MF_RETURN_IF_ERROR(WriteSummaryJson(st.options.run_dir, summary));
  st.metrics.Close();
  st.profile_file.Close();
  return summary;
}

absl::Status Trainer::GatherRankFigures(StepResult* r) {
  State& st = *state_;
  if (st.options.groups == nullptr) {
    r->rank_step_time_s = {r->step_time_s};
    r->rank_device_peak_bytes = {r->device_peak_bytes};
    return absl::OkStatus();
  }
  // One small all-gather per step: every rank's step time (µs) and memory high-water mark.
  parallel::Communicator& world = st.options.groups->world();
  Tensor mine = Tensor::Empty({2}, DType::kI64);
  mine.data<int64_t>()[0] = static_cast<int64_t>(r->step_time_s * 1e6);
  mine.data<int64_t>()[1] = r->device_peak_bytes;
  Tensor all = Tensor::Empty({2 * world.size()}, DType::kI64);
  MF_RETURN_IF_ERROR(parallel::WaitFor(world.AllGather(mine, &all, {})));
  r->rank_step_time_s.clear();
  r->rank_device_peak_bytes.clear();
  for (int i = 0; i < world.size(); ++i) {
    r->rank_step_time_s.push_back(all.data<int64_t>()[2 * i] / 1e6);
    r->rank_device_peak_bytes.push_back(all.data<int64_t>()[2 * i + 1]);
  }
  return absl::OkStatus();
}

namespace {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

void SummariseSteps(const std::vector<StepResult>& steps, const std::vector<double>& mfus,
                    TrainSummary* summary) {
  // The run's first step pays for warm-up (allocations, plans, NCCL set-up): left out when there
  // are others, as benchmarks leave out their warm-up steps.
  const size_t first = steps.size() > 1 ? 1 : 0;
  std::vector<double> step, data, forward, backward, update, exposed, mfu;
  for (size_t i = first; i < steps.size(); ++i) {
    const StepResult& r = steps[i];
    step.push_back(r.step_time_s);
    data.push_back(r.data_s);
    forward.push_back(r.forward_s);
    backward.push_back(r.backward_s);
    update.push_back(r.update_s);
    double e = 0;
    for (const auto& [kind, s] : r.comm_exposed_s) e += s;
    exposed.push_back(e);
    if (std::isfinite(mfus[i])) mfu.push_back(mfus[i]);
  }
  summary->median_step_s = Median(step);
  summary->median_data_s = Median(data);
  summary->median_forward_s = Median(forward);
  summary->median_backward_s = Median(backward);
  summary->median_update_s = Median(update);
  summary->median_comm_exposed_s = Median(exposed);
  summary->mfu = Median(mfu);
}

namespace {

// "312.4 ms", "4.21 s": step-scale durations.
std::string Ms(double seconds) {
  if (seconds < 10) return absl::StrFormat("%.1f ms", seconds * 1e3);
  return absl::StrFormat("%.2f s", seconds);
}

// MFU, throughput per device and where a median step went, for the closing summary.
std::string FormatEfficiency(const TrainSummary& s) {
  std::string out;
  if (s.peak_tflops > 0) {
    out += absl::StrFormat("  MFU              %.1f%% of %.4g TFLOP/s per device (%s)\n",
                           100 * s.mfu, s.peak_tflops, s.peak_source);
  } else if (!s.peak_source.empty()) {
    out += absl::StrFormat("  MFU              unknown: %s\n", s.peak_source);
  }
  out += absl::StrFormat("  per device       %.0f tokens/s on %d device(s)\n",
                         s.tokens_per_s_per_device, s.world_size);
  if (s.median_step_s > 0) {
    const double rest = s.median_step_s - s.median_data_s - s.median_forward_s -
                        s.median_backward_s - s.median_update_s - s.median_comm_exposed_s;
    out += absl::StrFormat(
        "  median step      %s: forward %s, backward %s, update %s, data %s, exposed "
        "communication %s, other %s\n",
        Ms(s.median_step_s), Ms(s.median_forward_s), Ms(s.median_backward_s),
        Ms(s.median_update_s), Ms(s.median_data_s), Ms(s.median_comm_exposed_s),
        Ms(std::max(0.0, rest)));
  }
  return out;
}

}  // namespace

std::string FormatSummary(const TrainSummary& s) {
  if (s.steps == 0 && s.resumed_from >= 0) {
    return absl::StrFormat(
        "── moefold summary ──\n"
        "  nothing to train: the checkpoint is at step %d, train.steps is reached (a larger\n"
        "  train.steps extends the run)\n",
        s.resumed_from);
  }
  return absl::StrFormat(
      "── moefold summary ──\n"
      "  steps            %d (%d skipped)\n"
      "  parameters       %.2f M total, %.2f M active per token\n"
      "  loss             %.4f → %.4f nats/token (mean of the last 10 steps)\n"
      "  tokens           %d in %s (%.0f tokens/s)\n"
      "  model FLOPs      %.3g per token, %.3f TFLOP/s achieved\n"
      "%s"
      "  metrics          %s/metrics.jsonl\n",
      s.steps, s.skipped_steps, s.params.total / 1e6, s.params.active / 1e6, s.first_loss,
      s.final_loss, s.tokens, FormatDuration(s.wall_s), s.tokens_per_s, s.model_flops_per_token,
      s.model_flops_per_token * s.tokens_per_s / 1e12, FormatEfficiency(s), s.run_dir) +
         (s.report_path.empty() ? std::string()
                                : absl::StrFormat("  report           %s\n", s.report_path)) +
         (s.resumed_from >= 0 ? absl::StrFormat("  resumed from     step %d\n", s.resumed_from)
                              : std::string()) +
         (s.eval_loss ? absl::StrFormat("  validation loss  %.4f (perplexity %.2f)\n", *s.eval_loss,
                                        std::exp(*s.eval_loss))
                      : std::string()) +
         (s.test_loss ? absl::StrFormat("  test loss        %.4f (perplexity %.2f)\n", *s.test_loss,
                                        std::exp(*s.test_loss))
                      : std::string()) +
         (s.last_checkpoint.empty()
              ? std::string()
              : absl::StrFormat("  checkpoint       %s\n", s.last_checkpoint)) +
         (s.profile_table.empty()
              ? std::string()
              : absl::StrFormat("── profile: %d step(s), per step ──\n%s", s.profiled_steps,
                                s.profile_table));
}

}  // namespace moefold::train
