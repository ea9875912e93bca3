// Equivalence harness for the multi-rank training tests: train a tiny MoE for K steps under some
// layout and compare, step by step and at the end, with the same run on one rank
// (docs/ARCHITECTURE.md §10).
// Every rank trains the single-rank reference itself, so the comparison needs no communication.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "configs/moefold.pb.h"
#include "core/train/trainer.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"

namespace moefold::train {

struct LayoutRun {
  std::vector<double> losses;  // StepResult::loss per step
  std::vector<double> lm_losses;
  std::vector<double> aux_losses;
  std::vector<double> grad_norms;
  // This rank's parameters by name, each gathered whole over TP/ETP/EP (under PP a stage holds its
  // layers only; every rank checks its own, so together they cover the model).
  std::map<std::string, std::vector<float>> params;
};

// configs/tiny_moe.yaml shrunk for the tests (2 layers: dense + MoE with a shared expert; 8 heads
// over 4 KV heads; vocabulary 257 so TP splits it unevenly; sequence aux loss, z-loss; uniform
// sample weights unless a case adds kReweighting), then `overrides`.
config::ExperimentConfig EquivalenceConfig(const std::vector<std::string>& overrides = {});

// This process's rank and the size of MPI_COMM_WORLD.
int WorldRank();
int WorldSize();

// Every parameter of `trainer`, each gathered whole over TP/ETP/EP (`groups` null = one rank).
std::map<std::string, std::vector<float>> GatheredParameters(Trainer& trainer,
                                                             const parallel::ProcessGroups* groups);

// Trains `steps` steps; `groups` null = one rank. Parameters are gathered over TP at the end.
LayoutRun TrainLayout(const config::ExperimentConfig& config,
                      const parallel::ProcessGroups* groups, int steps);
// The same with a case's own trainer options (options.groups as `groups` above; metrics files
// and progress are switched off here) and `on_step` called with every step's result.
LayoutRun TrainLayout(const config::ExperimentConfig& config, TrainerOptions options, int steps,
                      const std::function<void(const StepResult&)>& on_step = {});

// The single-rank run of EquivalenceConfig(overrides) for `steps` steps, trained once per process
// and cached by (overrides, steps).
const LayoutRun& SingleRankReference(const std::vector<std::string>& overrides, int steps);

// The layout's ProcessGroups over `world` (MPI_COMM_WORLD's duplicate when null), sizes from the
// config's parallel section, communicators of `backend` (on GPU 0 where it takes a device).
std::unique_ptr<parallel::ProcessGroups> MakeGroups(
    const config::ExperimentConfig& config, const parallel::MpiCommunicator* world,
    parallel::CommBackend backend = parallel::CommBackend::kMpi);

// How close two layouts of the same training must stay. In f32 only the order of the sums differs
// between layouts: losses within 1e-5, gradient norms within 1e-5 (every matrix measures ≤ 3e-7),
// parameters within 1e-4. In bf16 an f32 difference in the order of a sum occasionally flips the
// rounding of a bf16 weight or activation, and those flips compound over steps, so the bounds are
// wider — still far below what a mis-scaled or misrouted gradient does (a factor of 2 in a
// gradient moves its norm by 100%).
struct Tolerances {
  double loss_rel = 1e-5;       // loss per step, relative
  double grad_norm_rel = 1e-5;  // pre-clip gradient norm per step, relative
  double param_abs = 1e-4;      // every parameter element at the end, absolute
};
inline constexpr Tolerances kF32Tolerances{};
inline constexpr Tolerances kBf16Tolerances{.loss_rel = 3e-4, .grad_norm_rel = 3e-3,
                                            .param_abs = 3e-3};
// Loss-based reweighting (appended to a case's `model` settings) normalises each loss by the
// previous step's loss range; where that range is narrow a 2e-6 difference in a loss moves a
// weight by 1e-3, and the whole gradient comes out scaled by the same factor (PP2×TP2, step 8:
// 1 + 7.7e-4, measured parameter by parameter, while the losses agree to 1e-6). Reweighted cases
// hold the gradient norm to 1e-3.
inline const std::vector<std::string> kReweighting = {"reweighting.strategy=linupper",
                                                      "reweighting.temperature=0.5"};
inline constexpr Tolerances kReweightedTolerances{.loss_rel = 1e-5, .grad_norm_rel = 1e-3,
                                                  .param_abs = 1e-4};
// `model` with kReweighting appended.
std::vector<std::string> WithReweighting(std::vector<std::string> model);

// One case of an equivalence matrix: the layout (`overrides`) of a world size, and the model
// settings it shares with its single-rank reference (`model`).
struct LayoutCase {
  const char* name;
  int world;
  std::vector<std::string> overrides;
  std::vector<std::string> model;
  Tolerances tolerances = kF32Tolerances;  // kReweightedTolerances with kReweighting
};

// Skips unless the MPI world has case.world ranks; else trains the layout for `steps` steps over
// MPI_COMM_WORLD and expects the same training as one rank (ExpectSameTraining within
// case.tolerances), and with `check_aux` the same aux loss per step too.
void ExpectLayoutMatchesOneRank(const LayoutCase& layout, int steps, bool check_aux = false);

// Loss and gradient norm per step, and every parameter of `run` against the same-named one of
// `reference`, within `tol`.
void ExpectSameTraining(const LayoutRun& run, const LayoutRun& reference, const std::string& label,
                        const Tolerances& tol = kF32Tolerances);

}  // namespace moefold::train
