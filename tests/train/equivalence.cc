// The equivalence harness: tiny config, layout training with gathered parameters, comparison.
#include "tests/train/equivalence.h"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "configs/config_loader.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "parallel/tensor_parallel.h"

namespace moefold::train {

config::ExperimentConfig EquivalenceConfig(const std::vector<std::string>& overrides) {
  std::vector<std::string> all = {
      "model.hidden_size=32", "model.num_layers=2", "model.num_heads=8", "model.num_kv_heads=4",
      "model.head_dim=8", "model.ffn_hidden_size=64", "model.moe.num_experts=4",
      "model.moe.top_k=2", "model.moe.expert_ffn_hidden_size=32",
      "model.moe.num_shared_experts=1", "model.moe.first_dense_layers=1",
      "model.moe.aux_loss_type=seq", "model.moe.z_loss_coeff=0.001", "train.seq_len=16",
      "train.global_batch_size=8", "train.micro_batch_size=2", "optimizer.warmup_steps=2",
      "data.cache_dir=build/test-data"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  auto config = config::LoadConfigFile("configs/tiny_moe.yaml", all);
  MF_CHECK(config.ok()) << config.status();
  return *config;
}

std::unique_ptr<parallel::ProcessGroups> MakeGroups(const config::ExperimentConfig& config,
                                                    const parallel::MpiCommunicator* world,
                                                    parallel::CommBackend backend) {
  int size = 0;
  if (world != nullptr) {
    size = world->size();
  } else {
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  const auto& p = config.parallel();
  auto mapping = parallel::Mapping::Create(
      size, {.tp = p.tp(), .cp = p.cp(), .dp = p.dp(), .pp = p.pp(), .etp = p.etp(), .ep = p.ep(),
             .order = p.order()});
  MF_CHECK(mapping.ok()) << mapping.status();
  auto groups = parallel::ProcessGroups::Create(*mapping, {.backend = backend, .world = world});
  MF_CHECK(groups.ok()) << groups.status();
  return std::move(*groups);
}

LayoutRun TrainLayout(const config::ExperimentConfig& config,
                      const parallel::ProcessGroups* groups, int steps) {
  TrainerOptions options;
  options.groups = groups;
  return TrainLayout(config, options, steps);
}

LayoutRun TrainLayout(const config::ExperimentConfig& config, TrainerOptions options, int steps,
                      const std::function<void(const StepResult&)>& on_step) {
  options.write_metrics = false;
  options.print_progress = false;
  auto trainer = Trainer::Create(config, options);
  MF_CHECK(trainer.ok()) << trainer.status();
  LayoutRun run;
  for (int s = 0; s < steps; ++s) {
    auto r = (*trainer)->Step(s);
    MF_CHECK(r.ok()) << r.status();
    run.losses.push_back(r->loss);
    run.lm_losses.push_back(r->lm_loss);
    run.aux_losses.push_back(r->aux_loss);
    run.grad_norms.push_back(r->grad_norm);
    if (on_step) on_step(*r);
  }
  run.params = GatheredParameters(**trainer, options.groups);
  return run;
}

int WorldRank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int WorldSize() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

std::map<std::string, std::vector<float>> GatheredParameters(
    Trainer& trainer, const parallel::ProcessGroups* groups) {
  parallel::Communicator *tp = nullptr, *etp = nullptr, *ep = nullptr;
  if (groups != nullptr) {
    tp = *groups->Get(parallel::GroupKind::kTp);
    etp = *groups->Get(parallel::GroupKind::kEtp);
    ep = *groups->Get(parallel::GroupKind::kEp);
  }
  std::map<std::string, std::vector<float>> params;
  for (const auto& p : trainer.params().params()) {
    auto whole = parallel::GatherParameter(*p, tp, etp, ep);
    MF_CHECK(whole.ok()) << whole.status();
    params[p->name] = whole->ToVector();
  }
  return params;
}

const LayoutRun& SingleRankReference(const std::vector<std::string>& overrides, int steps) {
  static auto* runs = new std::map<std::pair<std::vector<std::string>, int>, LayoutRun>;
  auto it = runs->find({overrides, steps});
  if (it == runs->end()) {
    it = runs->emplace(std::pair{overrides, steps},
                       TrainLayout(EquivalenceConfig(overrides), nullptr, steps))
             .first;
  }
  return it->second;
}

std::vector<std::string> WithReweighting(std::vector<std::string> model) {
  model.insert(model.end(), kReweighting.begin(), kReweighting.end());
  return model;
}

void ExpectLayoutMatchesOneRank(const LayoutCase& layout, int steps, bool check_aux) {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world != layout.world) GTEST_SKIP() << layout.name << " runs on " << layout.world << " ranks";
  std::vector<std::string> overrides = layout.model;
  overrides.insert(overrides.end(), layout.overrides.begin(), layout.overrides.end());
  const config::ExperimentConfig config = EquivalenceConfig(overrides);
  auto groups = MakeGroups(config, nullptr);
  const LayoutRun run = TrainLayout(config, groups.get(), steps);
  const LayoutRun& reference = SingleRankReference(layout.model, steps);
  ExpectSameTraining(run, reference, layout.name, layout.tolerances);
  for (int s = 0; check_aux && s < steps; ++s) {
    EXPECT_NEAR(run.aux_losses[s], reference.aux_losses[s], 1e-5 * reference.aux_losses[s])
        << layout.name << " aux loss at step " << s;
  }
}

void ExpectSameTraining(const LayoutRun& run, const LayoutRun& reference,
                        const std::string& label, const Tolerances& tol) {
  ASSERT_EQ(run.losses.size(), reference.losses.size()) << label;
  ASSERT_EQ(run.grad_norms.size(), reference.grad_norms.size()) << label;
  for (size_t s = 0; s < reference.losses.size(); ++s) {
    EXPECT_NEAR(run.losses[s], reference.losses[s], tol.loss_rel * std::fabs(reference.losses[s]))
        << label << " loss at step " << s;
    EXPECT_NEAR(run.grad_norms[s], reference.grad_norms[s],
                tol.grad_norm_rel * std::fabs(reference.grad_norms[s]))
        << label << " gradient norm at step " << s;
  }
  ASSERT_FALSE(run.params.empty()) << label;
  double worst = 0;
  std::string worst_param;
  for (const auto& [name, values] : run.params) {
    auto ref = reference.params.find(name);
    ASSERT_NE(ref, reference.params.end()) << label << ": " << name << " is not in the reference";
    ASSERT_EQ(values.size(), ref->second.size()) << label << " " << name;
    for (size_t j = 0; j < values.size(); ++j) {
      const double d = std::fabs(static_cast<double>(values[j]) - ref->second[j]);
      if (d > worst) {
        worst = d;
        worst_param = name;
      }
    }
  }
  EXPECT_LT(worst, tol.param_abs) << label << ": largest parameter difference (" << worst_param
                                  << ")";
}

}  // namespace moefold::train
