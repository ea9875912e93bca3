// `moefold train`: load and validate the experiment, train, print the summary.
#include <unistd.h>

#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "configs/config_loader.h"
#include "configs/validate.h"
#include "core/train/exit_codes.h"
#include "core/train/preemption.h"
#include "core/train/trainer.h"
#include "launch/args.h"
#include "launch/bootstrap.h"
#include "launch/commands.h"
#include "parallel/comm_backend.h"
#include "parallel/mapping.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "report/report.h"

namespace moefold::launch {

namespace {

constexpr char kTrainHelp[] =
    "usage: moefold train --config FILE [--set key=value ...] [--run-dir DIR] [--resume]\n"
    "\n"
    "  --config FILE     YAML experiment file (schema: configs/moefold.proto)\n"
    "  --set key=value   override one config value by dotted path, e.g. --set train.steps=20\n"
    "                    (repeatable)\n"
    "  --run-dir DIR     where metrics.jsonl goes (default runs/<config name>)\n"
    "  --resume          continue from the newest complete checkpoint in checkpoint.dir (as\n"
    "                    checkpoint.resume: true; from scratch when there is none)\n"
    "\n"
    "Checkpoints: checkpoint.dir=DIR saves DIR/step-N/ every checkpoint.every steps and at the\n"
    "last step (checkpoint.keep_last keeps the newest K), written in the background while\n"
    "training goes on (checkpoint.async); DIR/latest names the newest complete one. A resumed run\n"
    "continues bit-identically on the same layout, and loads under any other layout or number of\n"
    "ranks (each rank reads its slices). A larger train.steps extends a run; a changed model, data\n"
    "or batch is refused by name. moefold export --checkpoint DIR/step-N --output HF_DIR writes\n"
    "Hugging Face safetensors; model.init_from: HF_DIR starts from such a directory.\n"
    "\n"
    "Parallelism: mpirun -np N moefold train --config FILE; dp = N / (tp·cp·pp). Set\n"
    "parallel.tp (tensor), parallel.sequence_parallel, parallel.cp (context), parallel.pp\n"
    "(pipeline; parallel.virtual_stages, parallel.schedule), parallel.ep / parallel.etp (experts)\n"
    "in the config or with --set; parallel.zero1=true shards the optimizer state. Rank 0 logs and\n"
    "writes metrics; a rank's error is printed with its rank and ends the whole job with a\n"
    "non-zero exit.\n"
    "\n"
    "Faults: each rank's watchdog writes RUN_DIR/flight/rank{R}.json every second and ends a job\n"
    "whose step loop makes no progress for train.hang_timeout_s (exit code 76), naming the stuck\n"
    "rank(s). SIGTERM/SIGINT to any rank: every rank finishes the step, saves a checkpoint and\n"
    "exits with code 75 (a second signal exits at once). train.verify_every=N runs every N-th step\n"
    "twice and names a rank whose result changed. moefold launch restarts failed jobs.\n"
    "\n"
    "Prints a live progress line on a terminal (plain lines otherwise) and a summary at the end\n"
    "(MFU against the device's peak, throughput per device, the median step's parts). The run\n"
    "directory gets config.yaml, run.json, plan.json and metrics.jsonl at the start and\n"
    "summary.json and report.html (see moefold report --help) at the end;\n"
    "logging.tensorboard=true adds TensorBoard event files under RUN_DIR/tb/ and\n"
    "logging.trace_steps=START-END a Chrome/Perfetto trace per rank under RUN_DIR/trace/.\n"
    "With data.path empty the built-in corpus is prepared under data/ on first use.\n";

// "tp 2 (SP) × cp 2 × dp 2 (ZeRO-1), etp 2 × ep 4": the attention dimensions larger than one ("one
// rank" when none is), then the MoE mesh's expert dimensions when there are any.
std::string LayoutSummary(const config::ExperimentConfig& config,
                          const parallel::ParallelSizes& sizes) {
  const auto& p = config.parallel();
  std::vector<std::string> parts;
  if (sizes.tp > 1) {
    parts.push_back(absl::StrCat("tp ", sizes.tp, p.sequence_parallel() ? " (SP)" : ""));
  }
  if (sizes.cp > 1) parts.push_back(absl::StrCat("cp ", sizes.cp));
  if (sizes.dp > 1) parts.push_back(absl::StrCat("dp ", sizes.dp, p.zero1() ? " (ZeRO-1)" : ""));
  if (sizes.pp > 1) {
    std::string schedule = p.schedule();
    if (schedule == "auto") schedule = p.virtual_stages() > 1 ? "interleaved" : "1f1b";
    parts.push_back(absl::StrCat("pp ", sizes.pp, " (", schedule,
                                 p.virtual_stages() > 1
                                     ? absl::StrCat(", ", p.virtual_stages(), " virtual stages")
                                     : "",
                                 ")"));
  }
  std::string layout = parts.empty() ? "one rank" : absl::StrJoin(parts, " × ");
  // The MoE mesh, when it differs from plain data parallelism.
  std::vector<std::string> moe;
  if (sizes.etp > 1) moe.push_back(absl::StrCat("etp ", sizes.etp));
  if (sizes.ep > 1) moe.push_back(absl::StrCat("ep ", sizes.ep));
  if (!moe.empty()) absl::StrAppend(&layout, ", ", absl::StrJoin(moe, " × "));
  return layout;
}

// Loads, validates and trains; every rank runs it. Errors every rank hits alike (a bad config) are
// printed once, by rank 0; a failure of one rank aborts the whole job (FailRank).
int TrainOnRanks(const RankInfo& info, ParsedArgs& parsed) {
  const std::string config_path = parsed.Get("config");
  auto fail_all = [&](const std::string& message) {
    return info.is_root() ? Fail("train", message) : 1;
  };
  auto config = config::LoadConfigFile(config_path, parsed.lists["set"]);
  if (!config.ok()) return fail_all(std::string(config.status().message()));
  if (absl::Status s = config::Validate(*config, info.world_size); !s.ok()) {
    return fail_all(absl::StrCat(config_path, " is not a valid experiment for ", info.world_size,
                                 " rank(s):\n", s.message()));
  }
  // Every collective's timeout, set-up included (parallel.comm_timeout_s).
  parallel::SetDefaultTimeout(std::chrono::milliseconds(
      static_cast<int64_t>(config->parallel().comm_timeout_s() * 1000)));
  // Every group of the folded mapping; the trainer takes the groups it needs.
  const auto& p = config->parallel();
  auto mapping = parallel::Mapping::Create(
      info.world_size, {.tp = p.tp(), .cp = p.cp(), .dp = p.dp(), .pp = p.pp(), .etp = p.etp(),
                        .ep = p.ep(), .order = p.order()});
  if (!mapping.ok()) return fail_all(std::string(mapping.status().message()));
  std::unique_ptr<parallel::ProcessGroups> groups;
  train::TrainerOptions options;
  const bool gpu = config->train().device() == "cuda";
  // The backend and this rank's GPU, from the physical GPUs every rank of the node sees: NCCL when
  // each rank has its own, host-staged MPI where ranks share one; MPI for CPU training.
  parallel::MpiCommunicator world = parallel::MpiCommunicator::World("world");
  auto placement = parallel::PlaceRanks(
      world, gpu, gpu ? parallel::VisibleGpuIds() : std::vector<std::string>{});
  if (!placement.ok()) return FailRank(info, "train", std::string(placement.status().message()));
  options.cuda_device = placement->device;
  if (info.world_size > 1) {
    parallel::ProcessGroupsOptions group_options;
    group_options.backend = placement->backend;
    group_options.device = placement->device;
    group_options.world = &world;
    auto created = parallel::ProcessGroups::Create(*mapping, group_options);
    if (!created.ok()) return FailRank(info, "train", std::string(created.status().message()));
    groups = std::move(*created);
    options.groups = groups.get();
  }
  options.print_progress = info.is_root();
  // Fault injection for the launcher's tests: MOEFOLD_INJECT_FAILURE=RANK:STEP.
  if (const char* inject = std::getenv("MOEFOLD_INJECT_FAILURE")) {
    int fail_rank = -1, fail_step = -1;
    if (std::sscanf(inject, "%d:%d", &fail_rank, &fail_step) == 2 && fail_rank == info.rank) {
      options.fail_at_step = fail_step;
    }
  }
  // MOEFOLD_INJECT_CHECKPOINT=RANK:STEP:fail|kill: that rank's write of the checkpoint of STEP
  // fails, or the rank is killed (SIGKILL) in the middle of it.
  if (const char* inject = std::getenv("MOEFOLD_INJECT_CHECKPOINT")) {
    int fault_rank = -1;
    long long fault_step = -1;
    char fault[16] = {0};
    if (std::sscanf(inject, "%d:%lld:%15s", &fault_rank, &fault_step, fault) == 3 &&
        fault_rank == info.rank) {
      options.checkpoint_fault_step = fault_step;
      options.checkpoint_fault = fault;
    }
  }
  // MOEFOLD_INJECT_BITFLIP=RANK:STEP (a bit of that rank's gradient flips in step STEP) and
  // MOEFOLD_INJECT_KILL=RANK:STEP[:SIGNAL] (that rank raises SIGNAL, default SIGKILL, in the
  // middle of STEP, unless the run resumed): the reliability tests' faults.
  for (const auto& [variable, target] :
       {std::pair<const char*, int64_t*>{"MOEFOLD_INJECT_BITFLIP", &options.bitflip_step},
        {"MOEFOLD_INJECT_KILL", &options.kill_step}}) {
    const char* inject = std::getenv(variable);
    int fault_rank = -1, fault_signal = 9;
    long long fault_step = -1;
    if (inject != nullptr &&
        std::sscanf(inject, "%d:%lld:%d", &fault_rank, &fault_step, &fault_signal) >= 2 &&
        fault_rank == info.rank) {
      *target = fault_step;
      if (target == &options.kill_step) options.kill_signal = fault_signal;
    }
  }
  // The watchdog (train.hang_timeout_s) ends a hung job with kExitHang.
  options.watchdog = true;
  options.end_job = [info](int exit_code) { AbortJob(info, exit_code); };
  options.resume = parsed.Has("resume");
  options.command_line = parsed.command_line;
  options.layout_description = LayoutSummary(*config, mapping->sizes());
  const std::string name = config->name().empty()
                               ? std::filesystem::path(config_path).stem().string()
                               : config->name();
  options.run_dir = parsed.Get("run-dir", "runs/" + name);
  const std::string progress = config->logging().progress();
  options.live_progress = progress == "always" || (progress == "auto" && isatty(fileno(stdout)));

  if (info.is_root()) {
    std::printf("moefold train: %s (%d layers, hidden %d, %d experts top-%d), %d steps of %d × %d "
                "tokens, %d rank(s): %s\n",
                name.c_str(), config->model().num_layers(), config->model().hidden_size(),
                config->model().moe().num_experts(), config->model().moe().top_k(),
                config->train().steps(), config->train().global_batch_size(),
                config->train().seq_len(), info.world_size,
                LayoutSummary(*config, mapping->sizes()).c_str());
    if (groups != nullptr) {
      std::printf("  communicators: %s (%s%s)\n", groups->DescribeBackends().c_str(),
                  placement->reason.c_str(),
                  placement->backend == parallel::CommBackend::kNccl
                      ? "; each NCCL communicator is set up on its first use"
                      : "");
    }
    std::fflush(stdout);
  }
  auto trainer = train::Trainer::Create(*config, options);
  if (!AllRanksOk(trainer.ok())) {
    if (trainer.ok()) return 1;  // a peer failed and printed why
    const std::string message(trainer.status().message());
    if (info.world_size == 1) return Fail("train", message);
    std::fprintf(stderr, "[rank %d] moefold train: %s\n", info.rank, message.c_str());
    return 1;
  }
  auto summary = (*trainer)->Run();
  if (!summary.ok()) return FailRank(info, "train", std::string(summary.status().message()));
  if (info.is_root()) {
    // The run's report (report/): written where the metrics are, linked from the summary.
    auto report = report::WriteReport(summary->run_dir, "");
    if (report.ok()) {
      summary->report_path = *report;
    } else {
      std::fprintf(stderr, "warning: no report: %s\n",
                   std::string(report.status().message()).c_str());
    }
    std::fputs(train::FormatSummary(*summary).c_str(), stdout);
  }
  if (summary->preempted) {
    // Every rank has finished its part of the checkpoint (rank 0 its manifest) before any exits:
    // mpirun ends the others when the first exits non-zero.
    AllRanksOk(true);
    if (info.is_root()) {
      std::printf("moefold train: stopped by a signal after step %lld%s; exit code %d\n",
                  static_cast<long long>(summary->steps),
                  summary->last_checkpoint.empty()
                      ? " (no checkpoint.dir: nothing saved)"
                      : (", checkpoint " + summary->last_checkpoint + " (resume with --resume)")
                            .c_str(),
                  train::kExitPreempted);
      std::fflush(stdout);
    }
    return train::kExitPreempted;
  }
  return 0;
}

}  // namespace

int TrainCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kTrainHelp, stdout);
    return 0;
  }
  auto parsed = ParseArgs(args, {{"config", "run-dir"}, {"set"}, {"resume"}}, "train");
  if (!parsed.ok()) return Fail("train", std::string(parsed.status().message()), 2);
  if (!parsed->Has("config")) return Fail("train", "--config FILE is required (see --help)", 2);
  // One BLAS thread per rank: the quick start's matrices are small, and ranks share the cores.
  if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr) openblas_set_num_threads(1);
  const RankInfo info = InitRanks(nullptr, nullptr);
  // SIGTERM / SIGINT: stop after the step with a checkpoint (core/train/preemption.h).
  train::InstallPreemptionHandlers();
  const int code = TrainOnRanks(info, *parsed);
  FinalizeRanks();
  return code;
}

}  // namespace moefold::launch
