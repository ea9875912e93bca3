// `moefold plan`: both parallel meshes, every group, and the memory one rank needs, computed
// without starting a run.
#include <cstdio>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "configs/config_loader.h"
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
    "what stays on the device, what is swapped to the host, the backward's working set).\n";

}  // namespace

int PlanCommand(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kPlanHelp, stdout);
    return 0;
  }
  auto parsed = ParseArgs(args, {{"config", "world", "rank", "memory-budget"}, {"set"}, {"json"}}, "plan");
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
