// The experiment checks that need the model library's memory estimates, registered with
// config::Validate (configs/validate.h) so that one validation names every problem before any rank
// allocates memory:
//   memory.host_budget_gb: the host memory memory.swap_fraction α needs on the busiest rank, with
//   the arithmetic (CheckHostBudget, core/train/memory_plan.h).
//
//   train::RegisterExperimentChecks();   // once, at start-up (the moefold binary does)
//   MF_RETURN_IF_ERROR(config::Validate(config, world_size));
#pragma once

namespace moefold::train {

// Registers the checks above; calling it again changes nothing.
void RegisterExperimentChecks();

}  // namespace moefold::train
