// `moefold plan`: both parallel meshes, every group, and the memory one rank needs, computed
// without starting a run.
#include <algorithm>
#include <cstdio>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "configs/config_loader.h"
#include "core/train/sim/cluster.h"
#include "core/train/sim/layout_search.h"
#include "core/train/sim/predict.h"
#include "core/train/memory_plan.h"
#include "launch/args.h"
#include "launch/commands.h"
#include "parallel/mapping.h"
#include "parallel/mapping_format.h"

namespace moefold::launch {
namespace {

constexpr char kPlanHelp[] =
    "usage: moefold plan --config FILE --world N [--rank R] [--json] [--memory-budget GB]\n"
    "                    [--set key=value ...]\n"
    "       moefold plan --config FILE --world N --predict [--cluster NAME|FILE] [--json]\n"
    "       moefold plan --config FILE --world N --search [--cluster NAME|FILE]\n"
    "                    [--micro-batch-sizes 1,2,4] [--top 10] [--json]\n"
    "\n"
    "  --config FILE   YAML experiment file; its parallel section (tp cp dp pp etp ep, order)\n"
    "  --world N       number of ranks to plan for (any size; nothing is started)\n"
    "  --rank R        whose groups to list (default 0)\n"
    "  --json          one JSON object: every group kind mapped to its rank lists, for the\n"
    "                  attention mesh and the MoE mesh, and \"memory\" for the rank\n"
    "  --memory-budget GB  suggest the cheapest activation policy whose total fits GB GiB on\n"
    "                  rank R: keep, then recompute selective, swap (α within\n"
    "                  memory.host_budget_gb), recompute full\n"
    "\n"
    "Also prints rank R's estimated memory (parameters, gradients, optimizer state by ZeRO-1\n"
    "shard, activations per micro-batch times those the pipeline schedule keeps in flight) and\n"
    "the pipeline bubble fraction. Activations follow memory.* (the activation store's policy:\n"
    "what stays on the device, what is swapped to the host, the backward's working set).\n"
    "\n"
    "  --predict       also predict the step on a cluster (docs/SIMULATOR.md): step time,\n"
    "                  tokens/s, model TFLOP/s per GPU and MFU, compute per layer by op family,\n"
    "                  every communication by group (intra/inter-node, exposed/hidden), bubble,\n"
    "                  gradient reduction, optimizer and data\n"
    "  --search        predict every layout of N GPUs that validates (tp cp pp virtual stages\n"
    "                  ep etp, micro-batch sizes), drop those over memory, print the fastest\n"
    "  --cluster C     configs/clusters/C.yaml or a file (default h100_sxm_ib400)\n"
    "  --micro-batch-sizes L   comma-separated micro-batch sizes --search tries (default 1,2,4)\n"
    "  --top K         how many layouts --search prints (default 10)\n"
    "  --dispatcher D  all_to_all (moefold's, default) or node_dedup: a what-if for a node-aware\n"
    "                  dispatcher (a token crosses the network once per destination node)\n";

int PredictOrSearch(const ParsedArgs& parsed, const config::ExperimentConfig& config, int world) {
  auto cluster = sim::LoadCluster(parsed.Get("cluster", "h100_sxm_ib400"));
  if (!cluster.ok()) return Fail("plan", std::string(cluster.status().message()));
  const bool json = parsed.Has("json");
  sim::PredictOptions predict_options;
  predict_options.dispatcher = parsed.Get("dispatcher", "all_to_all");
  if (parsed.Has("predict")) {
    auto prediction = sim::Predict(config, world, *cluster, predict_options);
    if (!prediction.ok()) return Fail("plan", std::string(prediction.status().message()));
    if (json) {
      sim::PredictionJson(*prediction).Print();
    } else {
      std::fputs(sim::FormatPrediction(*prediction).c_str(), stdout);
    }
    return 0;
  }
  sim::SearchOptions options;
  options.world = world;
  options.predict = predict_options;
  if (parsed.Has("micro-batch-sizes")) {
    options.micro_batch_sizes.clear();
    for (absl::string_view part : absl::StrSplit(parsed.Get("micro-batch-sizes"), ',')) {
      int m = 0;
      if (!absl::SimpleAtoi(part, &m) || m < 1) {
        return Fail("plan", absl::StrCat("--micro-batch-sizes: '", part,
                                         "' is not a positive integer"), 2);
      }
      options.micro_batch_sizes.push_back(m);
    }
  }
  if (parsed.Has("top") && (!absl::SimpleAtoi(parsed.Get("top"), &options.top) || options.top < 1)) {
    return Fail("plan", "--top must be a positive integer, got '" + parsed.Get("top") + "'", 2);
  }
  auto result = sim::SearchLayouts(config, *cluster, options);
  if (!result.ok()) return Fail("plan", std::string(result.status().message()));
  if (!json) {
    std::printf("%d layouts of %d GPUs on %s validate; %d do not fit in memory; the fastest %zu:\n",
                result->valid, world, cluster->name.c_str(), result->over_memory,
                result->best.size());
  }
  for (size_t i = 0; i < result->best.size(); ++i) {
    const sim::Prediction& p = result->best[i];
    if (json) {
      JsonLine line;
      line.Add("rank", static_cast<int>(i + 1)).Add("prediction", sim::PredictionJson(p));
      line.Print();
      continue;
    }
    const auto& par = result->configs[i].parallel();
    std::printf("%2zu. %s\n    pipeline %.3f s + bubble %.3f s + gradients exposed %.3f s + "
                "optimizer %.3f s; exposed comm per micro-batch on the slowest stage %.1f ms\n"
                "    --set parallel.tp=%d --set parallel.cp=%d --set parallel.pp=%d "
                "--set parallel.virtual_stages=%d --set parallel.ep=%d --set parallel.etp=%d "
                "--set parallel.sequence_parallel=%s --set parallel.first_stage_layers=%d "
                "--set parallel.last_stage_layers=%d --set train.micro_batch_size=%d\n",
                i + 1, sim::FormatPredictionSummary(p).c_str(), p.pipeline_seconds,
                p.bubble_seconds, p.dp_exposed_seconds, p.optimizer_seconds,
                [&] {
                  double worst = 0;
                  for (const auto& s : p.stages) worst = std::max(worst, s.exposed_comm);
                  return worst * 1e3;
                }(),
                par.tp(), par.cp(), par.pp(), par.virtual_stages(), par.ep(), par.etp(),
                par.sequence_parallel() ? "true" : "false", par.first_stage_layers(),
                par.last_stage_layers(), result->configs[i].train().micro_batch_size());
  }
  return 0;
}

}  // namespace

int PlanCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kPlanHelp, stdout);
    return 0;
  }
  auto parsed = ParseArgs(args,
                          {{"config", "world", "rank", "cluster", "micro-batch-sizes", "top",
                            "dispatcher", "memory-budget"},
                           {"set"},
                           {"json", "predict", "search"}},
                          "plan");
  if (!parsed.ok()) return Fail("plan", std::string(parsed.status().message()), 2);
  if (!parsed->Has("config") || !parsed->Has("world")) {
    return Fail("plan", "--config FILE and --world N are required (see --help)", 2);
  }
  int world = 0, rank = 0;
  if (!absl::SimpleAtoi(parsed->Get("world"), &world) || world < 1) {
    return Fail("plan", "--world must be a positive integer, got '" + parsed->Get("world") + "'", 2);
  }
  if (!absl::SimpleAtoi(parsed->Get("rank", "0"), &rank) || rank < 0 || rank >= world) {
    return Fail("plan", absl::StrCat("--rank must be in [0, ", world, "), got '",
                                     parsed->Get("rank"), "'"), 2);
  }
  auto config = config::LoadConfigFile(parsed->Get("config"), parsed->lists["set"]);
  if (!config.ok()) return Fail("plan", std::string(config.status().message()));
  if (parsed->Has("predict") && parsed->Has("search")) {
    return Fail("plan", "--predict and --search exclude each other", 2);
  }
  if (parsed->Has("predict") || parsed->Has("search")) return PredictOrSearch(*parsed, *config, world);
  const auto& p = config->parallel();
  parallel::ParallelSizes sizes;
  sizes.tp = p.tp();
  sizes.cp = p.cp();
  sizes.dp = p.dp();
  sizes.pp = p.pp();
  sizes.etp = p.etp();
  sizes.ep = p.ep();
  sizes.order = p.order();
  auto mapping = parallel::Mapping::Create(world, sizes);
  if (!mapping.ok()) return Fail("plan", std::string(mapping.status().message()));
  auto memory = train::EstimateMemory(*config, *mapping, rank);
  if (!memory.ok()) return Fail("plan", std::string(memory.status().message()));
  if (absl::Status budget = train::CheckHostBudget(*config, *mapping, rank); !budget.ok()) {
    return Fail("plan", std::string(budget.message()));
  }
  std::optional<train::PolicySuggestion> suggestion;
  if (parsed->Has("memory-budget")) {
    double gb = 0;
    if (!absl::SimpleAtod(parsed->Get("memory-budget"), &gb) || !(gb > 0)) {
      return Fail("plan", "--memory-budget must be a positive number of GiB, got '" +
                              parsed->Get("memory-budget") + "'", 2);
    }
    auto suggested = train::SuggestActivationPolicy(*config, *mapping, rank,
                                                    static_cast<int64_t>(gb * 1073741824.0));
    if (!suggested.ok()) return Fail("plan", std::string(suggested.status().message()));
    suggestion = *suggested;
  }
  if (parsed->Has("json")) {
    JsonLine json = parallel::MappingToJson(*mapping);
    json.Add("memory", train::MemoryEstimateJson(*memory));
    if (suggestion.has_value()) {
      JsonLine suggested = train::MemoryEstimateJson(suggestion->estimate);
      suggested.Add("settings", suggestion->config);
      json.Add("suggestion", suggested);
    }
    json.Print();
    return 0;
  }
  std::printf("%s\n%s\n%s", parallel::FormatMeshTables(*mapping).c_str(),
              parallel::FormatRankGroups(*mapping, rank).c_str(),
              train::FormatMemoryEstimate(*memory).c_str());
  if (suggestion.has_value()) {
    std::printf("\nsuggested for --memory-budget %s GiB: %s\n%s", parsed->Get("memory-budget").c_str(),
                suggestion->config.c_str(),
                train::FormatMemoryEstimate(suggestion->estimate).c_str());
  }
  return 0;
}

}  // namespace moefold::launch
