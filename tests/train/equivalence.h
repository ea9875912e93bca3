// Equivalence harness for the multi-rank training tests: train a tiny MoE for K steps under some
// layout and compare, step by step and at the end, with the same run on one rank (DESIGN §9).
// Every rank trains the single-rank reference itself, so the comparison needs no communication.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "configs/moefold.pb.h"
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
// over 4 KV heads; vocabulary 257 so TP splits it unevenly; sequence aux loss, z-loss, LinUpper
// reweighting), then `overrides`.
config::ExperimentConfig EquivalenceConfig(const std::vector<std::string>& overrides = {});

// Trains `steps` steps; `groups` null = one rank. Parameters are gathered over TP at the end.
LayoutRun TrainLayout(const config::ExperimentConfig& config,
                      const parallel::ProcessGroups* groups, int steps);

// The single-rank run of EquivalenceConfig(overrides) for `steps` steps, trained once per process
// and cached by (overrides, steps).
const LayoutRun& SingleRankReference(const std::vector<std::string>& overrides, int steps);

// The layout's ProcessGroups over `world` (MPI_COMM_WORLD's duplicate when null), sizes from the
// config's parallel section, communicators of `backend` (on GPU 0 where it takes a device).
std::unique_ptr<parallel::ProcessGroups> MakeGroups(
    const config::ExperimentConfig& config, const parallel::MpiCommunicator* world,
    parallel::CommBackend backend = parallel::CommBackend::kMpi);

// One case of an equivalence matrix: the layout (`overrides`) of a world size, and the model
// settings it shares with its single-rank reference (`model`).
struct LayoutCase {
  const char* name;
  int world;
  std::vector<std::string> overrides;
  std::vector<std::string> model;
};

// Skips unless the MPI world has case.world ranks; else trains the layout for `steps` steps over
// MPI_COMM_WORLD and expects the same training as one rank (ExpectSameTraining), and with
// `check_aux` the same aux loss per step too.
void ExpectLayoutMatchesOneRank(const LayoutCase& layout, int steps, bool check_aux = false);

// Loss per step within 1e-5 relative and every parameter of `run` within 1e-4 (absolute) of the
// same-named one of `reference`.
void ExpectSameTraining(const LayoutRun& run, const LayoutRun& reference, const std::string& label);

}  // namespace moefold::train
