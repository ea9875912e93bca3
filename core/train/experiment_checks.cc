#include "core/train/experiment_checks.h"

#include <set>
#include <string>
#include <vector>

#include "configs/validate.h"
#include "core/train/memory_plan.h"
#include "parallel/mapping.h"

namespace moefold::train {
namespace {

void CheckHostBudgetOfEveryStage(const config::ExperimentConfig& config, int world_size,
                                 std::vector<std::string>* problems) {
  const auto& mem = config.memory();
  if (mem.activation_policy() != "swap" || mem.swap_auto() || mem.host_budget_gb() <= 0) return;
  const auto& p = config.parallel();
  auto mapping = parallel::Mapping::Create(
      world_size, {.tp = p.tp(), .cp = p.cp(), .dp = p.dp(), .pp = p.pp(), .etp = p.etp(),
                   .ep = p.ep(), .order = p.order()});
  if (!mapping.ok()) return;  // Validate's own checks have named the layout's problem
  // The swapped rows of a rank depend on its pipeline stage (its layers and the micro-batches in
  // flight); the other coordinates split tokens and weights alike on every rank of a stage. So one
  // rank per stage, the first, stands for the stage; the first stage over budget is named.
  std::set<int> stages;
  for (int rank = 0; rank < world_size; ++rank) {
    if (!stages.insert(mapping->attention_coords(rank).pp).second) continue;
    const absl::Status s = CheckHostBudget(config, *mapping, rank);
    if (!s.ok()) {
      problems->push_back(std::string(s.message()));
      return;
    }
  }
}

}  // namespace

void RegisterExperimentChecks() {
  config::RegisterExperimentCheck("memory.host_budget_gb", CheckHostBudgetOfEveryStage);
}

}  // namespace moefold::train
