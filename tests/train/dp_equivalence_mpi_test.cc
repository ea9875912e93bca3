// Data-parallel equivalence (run under mpirun with 4 ranks): the tiny MoE trained 20 steps with DP = 2
// and DP = 4, with and without ZeRO-1, matches the single-rank run step by step (loss within 1e-5
// relative) and at the end (parameters within 1e-4). Every rank also trains the single-rank reference
// itself, so the comparison needs no communication.
#include <mpi.h>

#include <cmath>

#include "configs/config_loader.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::train {
namespace {

constexpr int kSteps = 20;

config::ExperimentConfig EquivalenceConfig(bool zero1) {
  auto config = config::LoadConfigFile(
      "configs/tiny_moe.yaml",
      {"model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.num_kv_heads=2",
       "model.ffn_hidden_size=64", "model.moe.num_experts=4", "model.moe.top_k=2",
       "model.moe.expert_ffn_hidden_size=32", "model.moe.first_dense_layers=1",
       "model.moe.aux_loss_type=seq", "model.moe.z_loss_coeff=0.001", "train.seq_len=16",
       "train.global_batch_size=8", "train.micro_batch_size=2", "train.steps=20",
       "optimizer.warmup_steps=2", "reweighting.strategy=linupper",
       "reweighting.temperature=0.5", "data.cache_dir=build/test-data",
       std::string("parallel.zero1=") + (zero1 ? "true" : "false")});
  MF_CHECK(config.ok()) << config.status();
  return *config;
}

struct RunResult {
  std::vector<double> losses;
  std::vector<std::vector<float>> params;
};

RunResult Train(const config::ExperimentConfig& config, const DataParallelGroups& groups) {
  TrainerOptions options;
  options.groups = groups;
  options.write_metrics = false;
  options.print_progress = false;
  auto trainer = Trainer::Create(config, options);
  MF_CHECK(trainer.ok()) << trainer.status();
  RunResult result;
  for (int s = 0; s < kSteps; ++s) {
    auto r = (*trainer)->Step(s);
    MF_CHECK(r.ok()) << r.status();
    result.losses.push_back(r->loss);
  }
  for (const auto& p : (*trainer)->params().params()) result.params.push_back(p->value.ToVector());
  return result;
}

const RunResult& Reference() {
  static const RunResult* reference = new RunResult(Train(EquivalenceConfig(false), {}));
  return *reference;
}

void ExpectMatchesReference(const RunResult& run, const std::string& label) {
  const RunResult& ref = Reference();
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(run.losses[s], ref.losses[s], 1e-5 * std::fabs(ref.losses[s]))
        << label << " step " << s;
  }
  double worst = 0;
  for (size_t i = 0; i < ref.params.size(); ++i) {
    for (size_t j = 0; j < ref.params[i].size(); ++j) {
      worst = std::max(worst, std::fabs(static_cast<double>(run.params[i][j]) - ref.params[i][j]));
    }
  }
  EXPECT_LT(worst, 1e-4) << label << ": largest parameter difference";
}

// DP over `dp` consecutive world ranks (world 4 = 4 / dp independent replicas of the same run).
void RunDataParallel(int dp, bool zero1) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm split;
  MPI_Comm_split(MPI_COMM_WORLD, rank / dp, rank, &split);
  {
    parallel::MpiCommunicator comm(split, "dp");
    DataParallelGroups groups;
    groups.dense = groups.expert = &comm;
    groups.dp_rank = comm.rank();
    groups.dp_size = comm.size();
    groups.world_size = comm.size();
    ExpectMatchesReference(Train(EquivalenceConfig(zero1), groups),
                           "dp" + std::to_string(dp) + (zero1 ? " zero1" : ""));
  }
  MPI_Comm_free(&split);
}

TEST(DataParallelEquivalence, Dp2) { RunDataParallel(2, false); }
TEST(DataParallelEquivalence, Dp4) { RunDataParallel(4, false); }
TEST(DataParallelEquivalence, Dp2Zero1) { RunDataParallel(2, true); }
TEST(DataParallelEquivalence, Dp4Zero1) { RunDataParallel(4, true); }

}  // namespace
}  // namespace moefold::train
