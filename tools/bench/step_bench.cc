// Whole-step training benchmark: for each micro-batch size and routing mode (forced-balanced and
// real), build the trainer of a config, run warm-up steps, then time N optimizer steps and print
// one JSON line with the median step time (and of its phases: data, forward + backward + gradient
// reductions, update), tokens/s, model TFLOP/s, MFU (analytic FLOPs of docs/FORMULAS.md §10 over
// the device's dense peak) and peak memory; then one "train_step_best" line per
// routing mode naming the fastest micro-batch. The trainer is built once per config and reused
// across micro-batches and routings. With --profile (--profile-steps N), N extra steps after each
// run's timed ones are profiled per op family: "op_profile" lines and a table on stderr. Nothing
// here asserts a time.
//
//   step_bench --config configs/bench/mixtral_mini.yaml --micro-batches 1,2,4 --steps 10
//   step_bench --config configs/tiny_moe.yaml --set train.device=cpu --steps 3   (CPU smoke run)
//   step_bench --config configs/tiny_moe.yaml --memory-policy keep,selective,full,swap:0.5,swap:1
// With --memory-policy every activation-store policy builds its own trainer and the lines carry
// "memory_policy" and the host memory the swapped rows took ("swap_host_peak_bytes").
//   step_bench ... --set precision.fp8_recipe=delayed   (an FP8 recipe; "fp8_recipe" in the line)
//
// Each step is timed on the host around Trainer::Step, which returns after the step's loss and
// statistics reached the host, so GPU work is included. MFU is reported only when a peak is known:
// --peak-tflops, or 989 (H100/H200 SXM dense bf16) on a GPU; on the CPU it is null.
//
// Under mpirun every rank trains its part of the config's layout (the backend chosen as `moefold
// train` does) and rank 0 prints; the line then also carries rank 0's communication per group kind
// (medians over the timed steps of the time in flight, comm_s_median, and of the part the compute
// waited, comm_exposed_s_median).
//   mpirun -np 4 step_bench --config configs/tiny_moe.yaml --set train.device=cpu --steps 3
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "configs/config_loader.h"
#include "configs/validate.h"
#include "core/allocator.h"
#include "core/cuda_runtime.h"
#include "core/model/activation_store.h"
#include "core/profiler.h"
#include "core/train/flops.h"
#include "core/train/model_from_config.h"
#include "core/train/metrics.h"
#include "core/train/trainer.h"
#include "launch/args.h"
#include "ops/grouped_gemm.h"
#include "parallel/comm_backend.h"
#include "parallel/mapping.h"
#include "parallel/process_groups.h"
#include "tools/bench/bench_line.h"

namespace moefold::bench {
namespace {

constexpr double kH100DenseBf16Tflops = 989.0;

struct Options {
  std::string config;
  std::vector<std::string> overrides;
  std::vector<int> micro_batches;  // empty: the config's
  std::vector<bool> balanced = {true, false};
  int warmup = 2;
  int steps = 5;
  int profile_steps = 0;  // --profile [N]: N extra steps timed per op family after the timed ones
  double peak_tflops = -1;  // < 0: by device
  ops::GroupedGemmBackend grouped_gemm = ops::GroupedGemmBackend::kAuto;
  std::vector<std::string> memory_policies;  // empty: the config's memory.*
};

// "keep" | "selective" | "full" | "swap:α" | "swap:auto" → memory.* overrides; empty when bad.
std::vector<std::string> MemoryPolicyOverrides(const std::string& policy) {
  if (policy == "keep") return {"memory.activation_policy=keep"};
  if (policy == "selective" || policy == "full") {
    return {"memory.activation_policy=recompute", "memory.recompute=" + policy};
  }
  if (policy == "swap:auto") return {"memory.activation_policy=swap", "memory.swap_auto=true"};
  double alpha = 0;
  if (policy.rfind("swap:", 0) == 0 && absl::SimpleAtod(policy.substr(5), &alpha)) {
    return {"memory.activation_policy=swap", absl::StrCat("memory.swap_fraction=", alpha)};
  }
  return {};
}

const char kUsage[] =
    "usage: step_bench --config FILE [--set key=value]... [--micro-batches 1,2,4]\n"
    "                  [--routing balanced,real] [--warmup N] [--steps N] [--peak-tflops X]\n"
    "                  [--grouped-gemm auto|loop|cublas_grouped|batched] [--profile]\n"
    "                  [--profile-steps N]\n"
    "                  [--memory-policy keep,selective,full,swap:0.5,swap:1,swap:auto]\n";

bool ParseInts(const std::string& text, std::vector<int>* out) {
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) return false;
    out->push_back(v);
  }
  return !out->empty();
}

absl::StatusOr<Options> ParseArgs(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h") return absl::CancelledError(kUsage);
  }
  launch::ArgSpec spec{.options = {"config", "micro-batches", "routing", "warmup", "steps",
                                   "profile-steps", "grouped-gemm", "peak-tflops",
                                   "memory-policy"},
                       .repeatable = {"set"},
                       .flags = {"profile"},
                       .program = "step_bench"};
  MF_ASSIGN_OR_RETURN(const launch::ParsedArgs parsed, launch::ParseArgs(args, spec, ""));
  Options o;
  o.config = parsed.Get("config");
  if (o.config.empty()) return absl::InvalidArgumentError(absl::StrCat("--config is required\n", kUsage));
  if (auto it = parsed.lists.find("set"); it != parsed.lists.end()) o.overrides = it->second;
  if (parsed.Has("profile")) o.profile_steps = 1;
  auto bad = [&](const std::string& name) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad value for --", name, ": ", parsed.Get(name)));
  };
  if (parsed.Has("micro-batches") && !ParseInts(parsed.Get("micro-batches"), &o.micro_batches)) {
    return bad("micro-batches");
  }
  if (parsed.Has("routing")) {
    o.balanced.clear();
    for (absl::string_view mode : absl::StrSplit(parsed.Get("routing"), ',')) {
      if (mode != "balanced" && mode != "real") return bad("routing");
      o.balanced.push_back(mode == "balanced");
    }
  }
  if (parsed.Has("warmup") && !(absl::SimpleAtoi(parsed.Get("warmup"), &o.warmup) && o.warmup >= 0)) {
    return bad("warmup");
  }
  if (parsed.Has("steps") && !(absl::SimpleAtoi(parsed.Get("steps"), &o.steps) && o.steps >= 1)) {
    return bad("steps");
  }
  if (parsed.Has("profile-steps") &&
      !(absl::SimpleAtoi(parsed.Get("profile-steps"), &o.profile_steps) && o.profile_steps >= 0)) {
    return bad("profile-steps");
  }
  if (parsed.Has("grouped-gemm")) {
    MF_ASSIGN_OR_RETURN(o.grouped_gemm, ops::ParseGroupedGemmBackend(parsed.Get("grouped-gemm")));
  }
  if (parsed.Has("memory-policy")) {
    for (absl::string_view policy : absl::StrSplit(parsed.Get("memory-policy"), ',')) {
      if (MemoryPolicyOverrides(std::string(policy)).empty()) return bad("memory-policy");
      o.memory_policies.emplace_back(policy);
    }
  }
  if (parsed.Has("peak-tflops") &&
      !(absl::SimpleAtod(parsed.Get("peak-tflops"), &o.peak_tflops) && o.peak_tflops > 0)) {
    return bad("peak-tflops");
  }
  return o;
}

struct RunFigures {
  int micro_batch = 0;
  double step_s_median = 0, tokens_per_s = 0, mfu = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::map<std::string, double> Medians(const std::map<std::string, std::vector<double>>& series) {
  std::map<std::string, double> medians;
  for (const auto& [key, values] : series) medians[key] = Median(values);
  return medians;
}

// The config with the benchmark's overrides, and the trainer built once from it: initialising and
// uploading billions of parameters takes seconds, so every (routing, micro-batch) run reuses it.
struct Bench {
  config::ExperimentConfig config;
  model::ModelSpec spec;
  // Under mpirun with more than one rank: the layout's groups (the trainer uses them).
  std::unique_ptr<parallel::MpiCommunicator> world;
  std::unique_ptr<parallel::ProcessGroups> groups;
  std::unique_ptr<train::Trainer> trainer;
  bool gpu = false;
  int device = 0;  // this rank's GPU
  double peak_tflops = 0;
  int64_t next_step = 0;  // steps continue across runs (the data and the LR schedule move on)
  std::string memory_policy;  // --memory-policy's entry, or the config's
};

absl::StatusOr<Bench> MakeBench(const Options& o, int runs, const std::string& memory_policy) {
  std::vector<std::string> overrides = o.overrides;
  for (const std::string& m : MemoryPolicyOverrides(memory_policy)) overrides.push_back(m);
  const int steps = (o.warmup + o.steps + o.profile_steps) * runs;
  overrides.push_back(absl::StrCat("train.steps=", steps));
  overrides.push_back("logging.progress=never");
  {
    // A short benchmark run may be shorter than the config's LR warm-up; the schedule does not
    // change the step's cost, so the warm-up is cut to the run.
    MF_ASSIGN_OR_RETURN(config::ExperimentConfig base, config::LoadConfigFile(o.config, overrides));
    if (base.optimizer().warmup_steps() > steps) {
      overrides.push_back(absl::StrCat("optimizer.warmup_steps=", steps));
    }
  }
  Bench b;
  b.world = std::make_unique<parallel::MpiCommunicator>(parallel::MpiCommunicator::World("world"));
  const int ranks = b.world->size();
  MF_ASSIGN_OR_RETURN(b.config, config::LoadConfigFile(o.config, overrides));
  MF_RETURN_IF_ERROR(config::Validate(b.config, ranks));
  MF_ASSIGN_OR_RETURN(b.spec, train::ModelSpecFromConfig(b.config));
  b.gpu = b.config.train().device() == "cuda";
  b.peak_tflops = o.peak_tflops > 0 ? o.peak_tflops : b.gpu ? kH100DenseBf16Tflops : 0;
  if (b.gpu && cuda::DeviceCount() == 0) {
    return absl::FailedPreconditionError("train.device is cuda but this machine has no visible GPU");
  }
  train::TrainerOptions options;
  options.write_metrics = false;
  options.print_progress = false;
  MF_ASSIGN_OR_RETURN(
      const parallel::GpuPlacement placement,
      parallel::PlaceRanks(*b.world, b.gpu,
                           b.gpu ? parallel::VisibleGpuIds() : std::vector<std::string>{}));
  b.device = options.cuda_device = placement.device;
  if (ranks > 1) {
    const auto& p = b.config.parallel();
    const parallel::ParallelSizes sizes{.tp = p.tp(), .cp = p.cp(), .dp = p.dp(), .pp = p.pp(),
                                        .etp = p.etp(), .ep = p.ep(), .order = p.order()};
    MF_ASSIGN_OR_RETURN(const parallel::Mapping mapping, parallel::Mapping::Create(ranks, sizes));
    MF_ASSIGN_OR_RETURN(b.groups,
                        parallel::ProcessGroups::Create(mapping, {.backend = placement.backend,
                                                                  .device = placement.device,
                                                                  .world = b.world.get()}));
    options.groups = b.groups.get();
  }
  MF_ASSIGN_OR_RETURN(b.trainer, train::Trainer::Create(b.config, options));
  b.memory_policy = memory_policy.empty() ? b.config.memory().activation_policy() : memory_policy;
  return b;
}

// The op-family profile of one run: an "op_profile" JSON line per family (ms per step, share of
// the step, calls per step, ms per layer), one for the unattributed rest (the GPU idle, or work
// outside every scope), and the table on stderr.
void PrintProfile(const Bench& b, int64_t micro, bool balanced,
                  const std::vector<StepProfile>& profiles, double step_flops) {
  const StepProfile sum = SumProfiles(profiles);
  const double n = static_cast<double>(profiles.size()), step_ms = sum.step_ms / n;
  auto line = [&](const std::string& family, double ms, double calls) {
    BenchLine("op_profile")
        .Add("config", b.config.name())
        .Add("routing", balanced ? "balanced" : "real")
        .Add("micro_batch", micro)
        .Add("profiled_steps", static_cast<int64_t>(profiles.size()))
        .Add("family", family)
        .Add("ms_per_step", ms)
        .Add("share", step_ms > 0 ? ms / step_ms : NAN)
        .Add("calls_per_step", calls)
        .Print();
  };
  for (int f = 0; f < kNumOpFamilies; ++f) {
    line(std::string(OpFamilyName(static_cast<OpFamily>(f))), sum.family_ms[f] / n,
         static_cast<double>(sum.calls[f]) / n);
  }
  line("unattributed", sum.unattributed_ms / n, 0);
  BenchLine("op_profile")
      .Add("config", b.config.name())
      .Add("routing", balanced ? "balanced" : "real")
      .Add("micro_batch", micro)
      .Add("family", "step")
      .Add("ms_per_step", step_ms)
      .Add("model_tflops", step_ms > 0 ? step_flops / (step_ms * 1e-3) / 1e12 : NAN)
      .Print();
  std::fprintf(stderr, "op profile: %s, %s routing, micro-batch %lld, %d step(s)\n%s",
               b.config.name().c_str(), balanced ? "balanced" : "real",
               static_cast<long long>(micro), static_cast<int>(n),
               FormatProfileTable(sum, static_cast<int>(n)).c_str());
}

// One (micro-batch, routing) configuration on the shared trainer: a JSON line with its figures.
absl::StatusOr<RunFigures> RunOne(const Options& o, Bench& b, int micro_batch, bool balanced) {
  const auto& train = b.config.train();
  const int64_t micro = micro_batch > 0 ? micro_batch : train.micro_batch_size();
  MF_RETURN_IF_ERROR(b.trainer->SetMicroBatchSize(micro));
  b.trainer->SetForceBalancedRouting(balanced);
  const Device device = b.gpu ? Device::Cuda(b.device) : Device::Cpu();
  // Peak memory of this run alone (parameters and optimizer state included): the previous run's
  // activations have been freed.
  AllocatorFor(device).ResetPeak();
  Allocator& host_arena = model::ActivationStore::HostArena(device);
  const double host_base = static_cast<double>(host_arena.current_bytes());
  host_arena.ResetPeak();
  std::vector<double> times, data_s, model_s, update_s;
  std::map<std::string, std::vector<double>> comm_s, comm_exposed_s;  // by group kind
  train::StepResult first, last;
  double imbalance_sum = 0;
  int64_t imbalance_n = 0;
  for (int s = 0; s < o.warmup + o.steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    MF_ASSIGN_OR_RETURN(train::StepResult r, b.trainer->Step(b.next_step++));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s == 0) first = r;
    last = r;
    if (s < o.warmup) continue;
    times.push_back(dt);
    data_s.push_back(r.data_s);
    model_s.push_back(r.model_s);
    update_s.push_back(r.update_s);
    for (const auto& [kind, t] : r.comm_s) comm_s[kind].push_back(t);
    for (const auto& [kind, t] : r.comm_exposed_s) comm_exposed_s[kind].push_back(t);
    for (double x : r.expert_imbalance) imbalance_sum += x, ++imbalance_n;
  }
  // Read after the timed steps, so the high-water mark covers them.
  const double peak_bytes = static_cast<double>(AllocatorFor(device).peak_bytes());
  const double swap_host_peak = static_cast<double>(host_arena.peak_bytes()) - host_base;
  // Profiled steps come after the timed ones: their events must not slow the figures above.
  std::vector<StepProfile> profiles;
  b.trainer->SetProfiling(true);
  for (int s = 0; s < o.profile_steps; ++s) {
    absl::StatusOr<train::StepResult> r = b.trainer->Step(b.next_step++);
    if (!r.ok()) {
      b.trainer->SetProfiling(false);
      return r.status();
    }
    if (r->profile) profiles.push_back(*r->profile);
  }
  b.trainer->SetProfiling(false);

  const double flops_per_token = train::TrainingFlopsPerToken(b.spec, train.seq_len());
  const train::ParameterCounts params = train::CountParameters(b.spec);
  const double tokens = static_cast<double>(train.global_batch_size()) * train.seq_len();
  const double peak = b.peak_tflops;
  RunFigures f;
  f.micro_batch = static_cast<int>(micro);
  f.step_s_median = Median(times);
  f.tokens_per_s = tokens / f.step_s_median;
  const double tflops = flops_per_token * f.tokens_per_s / 1e12;
  f.mfu = peak > 0 ? tflops / peak : NAN;
  BenchLine("train_step")
      .Add("config", b.config.name())
      .Add("device", b.gpu ? "cuda" : "cpu")
      .Add("compute_dtype", b.config.precision().compute_dtype())
      .Add("fp8_recipe", b.config.precision().fp8_recipe())
      .Add("routing", balanced ? "balanced" : "real")
      .Add("grouped_gemm", ops::GroupedGemmBackendName(o.grouped_gemm))
      .Add("micro_batch", micro)
      .Add("global_batch", train.global_batch_size())
      .Add("seq_len", train.seq_len())
      .Add("warmup_steps", o.warmup)
      .Add("timed_steps", o.steps)
      .Add("step_s_median", f.step_s_median)
      .Add("step_s_min", *std::min_element(times.begin(), times.end()))
      .Add("step_s_max", *std::max_element(times.begin(), times.end()))
      .Add("data_s_median", Median(data_s))
      .Add("model_s_median", Median(model_s))
      .Add("update_s_median", Median(update_s))
      .Add("tokens_per_step", tokens)
      .Add("tokens_per_s", f.tokens_per_s)
      .Add("flops_per_token", flops_per_token)
      .Add("model_tflops", tflops)
      .Add("peak_tflops", peak > 0 ? peak : NAN)
      .Add("mfu", f.mfu)
      .Add("params_total", static_cast<double>(params.total))
      .Add("params_active", static_cast<double>(params.active))
      .Add("peak_memory_bytes", peak_bytes)
      .Add("memory_policy", b.memory_policy)
      .Add("swap_host_peak_bytes", swap_host_peak)
      .Add("expert_imbalance_mean", imbalance_n > 0 ? imbalance_sum / imbalance_n : NAN)
      .Add("first_loss", first.loss)
      .Add("last_loss", last.loss)
      .Add("ranks", b.world->size())
      .Add("comm_s_median", train::JsonObject(Medians(comm_s)))
      .Add("comm_exposed_s_median", train::JsonObject(Medians(comm_exposed_s)))
      .Print();
  if (!profiles.empty()) PrintProfile(b, micro, balanced, profiles, flops_per_token * tokens);
  return f;
}

int Main(int argc, char** argv) {
  absl::StatusOr<Options> parsed = ParseArgs(argc, argv);
  if (!parsed.ok()) {
    const bool help = absl::IsCancelled(parsed.status());
    std::fprintf(help ? stdout : stderr, "%s%s",
                 help ? "" : "step_bench: ", std::string(parsed.status().message()).c_str());
    if (!help) std::fprintf(stderr, "\n");
    return help ? 0 : 2;
  }
  const Options& o = *parsed;
  ops::SetGroupedGemmBackend(o.grouped_gemm);  // the GPU's expert GEMMs (the CPU always loops)
  const std::vector<int> micro_batches =
      o.micro_batches.empty() ? std::vector<int>{0} : o.micro_batches;
  const std::vector<std::string> policies =
      o.memory_policies.empty() ? std::vector<std::string>{""} : o.memory_policies;
  bool any_failed = false;
  for (const std::string& policy : policies) {
    absl::StatusOr<Bench> bench =
        MakeBench(o, static_cast<int>(micro_batches.size() * o.balanced.size()), policy);
    if (!bench.ok()) {
      BenchLine("train_step")
          .Add("memory_policy", policy)
          .Add("error", std::string(bench.status().message()))
          .Print();
      any_failed = true;
      continue;
    }
    for (bool balanced : o.balanced) {
      const std::string routing = balanced ? "balanced" : "real";
      bool have_best = false;
      RunFigures best;
      for (int mb : micro_batches) {
        absl::StatusOr<RunFigures> f = RunOne(o, *bench, mb, balanced);
        if (!f.ok()) {
          // A micro-batch that does not fit (memory, divisibility) is a figure too: say why.
          BenchLine("train_step")
              .Add("routing", routing)
              .Add("micro_batch", mb)
              .Add("error", std::string(f.status().message()))
              .Print();
          any_failed = true;
          continue;
        }
        if (!have_best || f->tokens_per_s > best.tokens_per_s) best = *f;
        have_best = true;
      }
      if (!have_best) continue;
      BenchLine("train_step_best")
          .Add("routing", routing)
          .Add("grouped_gemm", ops::GroupedGemmBackendName(o.grouped_gemm))
          .Add("micro_batch", best.micro_batch)
          .Add("tokens_per_s", best.tokens_per_s)
          .Add("step_s_median", best.step_s_median)
          .Add("mfu", best.mfu)
          .Add("memory_policy", bench->memory_policy)
          .Print();
    }
  }
  return any_failed ? 1 : 0;
}

}  // namespace
}  // namespace moefold::bench

int main(int argc, char** argv) {
  // MPI for runs under mpirun (a single process starts as a world of one). Only rank 0 prints the
  // figures; the other ranks' stdout is dropped (their errors still reach stderr).
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;
  const int code = moefold::bench::Main(argc, argv);
  MPI_Finalize();
  return code;
}
