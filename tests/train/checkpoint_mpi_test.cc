// Checkpoints under mpirun with 8 ranks (docs/ARCHITECTURE.md §11): a run saved after step 6 of 12
// and resumed continues exactly as the uninterrupted run — bit-identical losses, gradient norms and
// parameters on the same layout, with every feature that keeps state (ZeRO-1, EF21 between
// anchors, reweighting, the expert bias, the spike EMA) — and a checkpoint saved under one layout
// loads under another (every dimension changes across the matrix, the world size too) and
// continues like the one-rank run within the equivalence tolerances. Ranks beyond a phase's world
// size sit the phase out.
#include <mpi.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "parallel/tensor_parallel.h"
#include "tests/train/equivalence.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 12;
constexpr int kSaveAt = 6;

// The model every case trains: the equivalence model with 4 layers (so two pipeline stages can
// each hold two virtual stages) and 8 experts, an expert bias, and loss-based reweighting.
std::vector<std::string> Model(std::vector<std::string> extra = {}) {
  std::vector<std::string> model = {"model.num_layers=4", "model.moe.num_experts=8",
                                    "model.moe.score_function=sigmoid", "model.moe.expert_bias=true",
                                    "model.moe.expert_bias_rate=0.001"};
  model = WithReweighting(model);
  model.push_back("train.steps=" + std::to_string(kSteps));  // the LR schedule spans the 12 steps
  model.insert(model.end(), extra.begin(), extra.end());
  return model;
}

struct PhaseRun {
  bool member = false;  // this rank took part
  LayoutRun run;        // steps [first, last) and the parameters at the end
};

// Trains steps [first, last) of `config` on the first `world` ranks: from scratch when first is 0,
// else resumed from config's checkpoint.dir (which must hold step `first`); saves after `last`
// when `save`. Collective over MPI_COMM_WORLD (the other ranks only split and wait).
PhaseRun RunPhase(const config::ExperimentConfig& config, int world, int first, int last,
                  bool save) {
  PhaseRun phase;
  const int rank = WorldRank();
  auto self = parallel::MpiCommunicator::World("world");
  auto sub = self.Split(rank < world ? 0 : MPI_UNDEFINED, rank, "world");
  if (rank < world) {
    MF_CHECK(sub.ok()) << sub.status();
    phase.member = true;
    std::unique_ptr<parallel::ProcessGroups> groups;
    TrainerOptions options;
    options.write_metrics = false;
    options.print_progress = false;
    if (world > 1) {
      groups = MakeGroups(config, sub->get());
      options.groups = groups.get();
    }
    auto trainer = Trainer::Create(config, options);
    MF_CHECK(trainer.ok()) << trainer.status();
    if (first > 0) {
      auto resumed = (*trainer)->Resume();
      MF_CHECK(resumed.ok()) << resumed.status();
      MF_CHECK_EQ(*resumed, first);
    }
    for (int s = first; s < last; ++s) {
      auto r = (*trainer)->Step(s);
      MF_CHECK(r.ok()) << r.status();
      phase.run.losses.push_back(r->loss);
      phase.run.lm_losses.push_back(r->lm_loss);
      phase.run.aux_losses.push_back(r->aux_loss);
      phase.run.grad_norms.push_back(r->grad_norm);
    }
    if (save) {
      MF_CHECK((*trainer)->BeginSave(last).ok());
      MF_CHECK((*trainer)->FinishSave().ok());
    }
    phase.run.params = GatheredParameters(**trainer, groups.get());
  }
  MPI_Barrier(MPI_COMM_WORLD);
  return phase;
}

// A fresh checkpoint directory per case (rank 0 clears it; everyone waits).
std::string CaseDir(const std::string& name) {
  const std::string dir = "build/test-checkpoints/" + name;
  if (WorldRank() == 0) std::filesystem::remove_all(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

config::ExperimentConfig Config(const std::vector<std::string>& model,
                                const std::vector<std::string>& layout, const std::string& dir) {
  std::vector<std::string> all = model;
  all.insert(all.end(), layout.begin(), layout.end());
  all.push_back("checkpoint.dir=" + dir);
  return EquivalenceConfig(all);
}

// Steps [from, to) of `run` (which starts at step `first`) as a LayoutRun with the same params.
LayoutRun Tail(const LayoutRun& run, int first, int from) {
  LayoutRun tail = run;
  tail.losses.assign(run.losses.begin() + (from - first), run.losses.end());
  tail.grad_norms.assign(run.grad_norms.begin() + (from - first), run.grad_norms.end());
  return tail;
}

struct ResumeCase {
  const char* name;
  int world;
  std::vector<std::string> layout;
  std::vector<std::string> model_extra;
};

class SameLayoutResume : public ::testing::TestWithParam<ResumeCase> {};

// Uninterrupted 12 steps against 6 steps, save, a new trainer, resume, 6 steps: identical bits.
TEST_P(SameLayoutResume, ContinuesBitIdentically) {
  const ResumeCase& c = GetParam();
  if (WorldSize() < c.world) GTEST_SKIP() << c.name << " needs " << c.world << " ranks";
  const std::string dir = CaseDir(std::string("same-") + c.name);
  const config::ExperimentConfig config = Config(Model(c.model_extra), c.layout, dir);
  const PhaseRun whole = RunPhase(config, c.world, 0, kSteps, false);
  RunPhase(config, c.world, 0, kSaveAt, true);
  const PhaseRun resumed = RunPhase(config, c.world, kSaveAt, kSteps, false);
  if (!resumed.member) return;
  for (int s = kSaveAt; s < kSteps; ++s) {
    EXPECT_EQ(resumed.run.losses[s - kSaveAt], whole.run.losses[s]) << c.name << " step " << s;
    EXPECT_EQ(resumed.run.grad_norms[s - kSaveAt], whole.run.grad_norms[s])
        << c.name << " step " << s;
  }
  for (const auto& [name, values] : whole.run.params) {
    EXPECT_EQ(resumed.run.params.at(name), values) << c.name << " " << name;
  }
}

// EF21 compresses the data-parallel reduction from step 2 on (anchor at 2, no re-anchor), so the
// save at step 6 falls between anchors and the error-feedback state must come back.
const std::vector<std::string> kEf21 = {"compression.method=ef21", "compression.compressor=int8",
                                        "compression.warm_start_steps=2",
                                        "compression.reanchor_every=0"};

INSTANTIATE_TEST_SUITE_P(
    Checkpoint, SameLayoutResume,
    ::testing::Values(
        ResumeCase{"OneRank", 1, {}, kEf21},
        ResumeCase{"Pp2Tp2Dp2Ep4Zero1Ef21", 8,
                   {"parallel.pp=2", "parallel.tp=2", "parallel.dp=2", "parallel.ep=4",
                    "parallel.zero1=true"},
                   kEf21}),
    [](const auto& info) { return std::string(info.param.name); });

struct ReshardCase {
  const char* name;
  int save_world;
  std::vector<std::string> save_layout;
  int load_world;
  std::vector<std::string> load_layout;
};

class Reshard : public ::testing::TestWithParam<ReshardCase> {};

// Saved under one layout after 6 steps, loaded under another for the last 6: the whole 12 steps
// match the uninterrupted one-rank run within the f32 equivalence tolerances (reweighted: the
// gradient norm within 1e-3, see tests/train/equivalence.h).
TEST_P(Reshard, ContinuesLikeTheOneRankRun) {
  const ReshardCase& c = GetParam();
  if (WorldSize() < std::max(c.save_world, c.load_world)) GTEST_SKIP();
  const std::string dir = CaseDir(std::string("reshard-") + c.name);
  const std::vector<std::string> model = Model();
  const PhaseRun saved =
      RunPhase(Config(model, c.save_layout, dir), c.save_world, 0, kSaveAt, true);
  const PhaseRun loaded =
      RunPhase(Config(model, c.load_layout, dir), c.load_world, kSaveAt, kSteps, false);
  if (!loaded.member) return;
  const LayoutRun& reference = SingleRankReference(model, kSteps);
  ExpectSameTraining(loaded.run, Tail(reference, 0, kSaveAt), c.name, kReweightedTolerances);
  if (saved.member) {
    for (int s = 0; s < kSaveAt; ++s) {
      EXPECT_NEAR(saved.run.losses[s], reference.losses[s], 1e-5 * reference.losses[s])
          << c.name << " before the save, step " << s;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Checkpoint, Reshard,
    ::testing::Values(
        // Tensor parallelism in, expert parallelism out, and a change of world size.
        ReshardCase{"Tp2Ep2ToOneRank", 2, {"parallel.tp=2", "parallel.ep=2"}, 1, {}},
        ReshardCase{"OneRankToTp2SpCp2Ep4Zero1", 1, {}, 4,
                    {"parallel.tp=2", "parallel.sequence_parallel=true", "parallel.cp=2",
                     "parallel.ep=4", "parallel.zero1=true"}},
        // ZeRO-1 shards of one data-parallel size into another, and off.
        ReshardCase{"Dp4Zero1ToDp2", 4, {"parallel.zero1=true"}, 2, {}},
        ReshardCase{"Dp2ToDp8Zero1Ep8", 2, {}, 8,
                    {"parallel.zero1=true", "parallel.ep=8", "train.micro_batch_size=1"}},
        // Expert-tensor parallelism folded under TP, into plain EP over more ranks.
        ReshardCase{"Tp2Etp2Ep2ToEp4Dp4", 4,
                    {"parallel.tp=2", "parallel.etp=2", "parallel.ep=2"}, 4,
                    {"parallel.ep=4"}},
        ReshardCase{"Ep8Zero1ToEtp2Ep4Cp2Tp2", 8,
                    {"parallel.ep=8", "parallel.zero1=true", "train.micro_batch_size=1"}, 8,
                    {"parallel.etp=2", "parallel.ep=4", "parallel.cp=2", "parallel.tp=2"}},
        // Pipelines: virtual stages in and out, stage counts changing, with TP and ZeRO-1.
        ReshardCase{"Pp2Vp2ToPp4", 2, {"parallel.pp=2", "parallel.virtual_stages=2"}, 4,
                    {"parallel.pp=4"}},
        ReshardCase{"Pp4Tp2Zero1ToPp2Vp2Dp2Ep2", 8,
                    {"parallel.pp=4", "parallel.tp=2", "parallel.zero1=true"}, 4,
                    {"parallel.pp=2", "parallel.virtual_stages=2", "parallel.ep=2"}},
        ReshardCase{"Cp2Pp2Ep2ToTp4SpDp2Zero1", 4,
                    {"parallel.cp=2", "parallel.pp=2", "parallel.ep=2"}, 8,
                    {"parallel.tp=4", "parallel.sequence_parallel=true", "parallel.zero1=true"}}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace moefold::train
