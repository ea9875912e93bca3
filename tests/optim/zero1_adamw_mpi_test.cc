// ZeRO-1 AdamW under mpirun (2 and 4 ranks): the scaled step (one AdamWFlatStep per bucket shard,
// then the all-gather) leaves every rank with the same parameters, bit for bit, as the per-segment
// step on gradients scaled beforehand, over a model with norms in two reduction groups.
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "optim/zero1_adamw.h"
#include "parallel/grad_sync.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::optim {
namespace {

// Two dense weights and a norm reduced over DP×CP, a router and a norm over TP×DP×CP.
std::unique_ptr<ParameterSet> SmallModel() {
  auto set = std::make_unique<ParameterSet>();
  set->Add("model.layers.0.self_attn.q_proj.weight", {6, 7}, GradReduction::kDenseDataCp, 0.5f);
  set->Add("model.layers.0.input_layernorm.weight", {7}, GradReduction::kDenseDataCp, 0.0f,
           /*weight_decay=*/false, /*init_value=*/1.0f);
  set->Add("model.layers.0.mlp.gate.weight", {4, 7}, GradReduction::kDenseDataCpTp, 0.5f);
  set->Add("model.layers.0.post_attention_layernorm.weight", {7}, GradReduction::kDenseDataCpTp,
           0.0f, /*weight_decay=*/false, /*init_value=*/1.0f);
  set->Add("model.layers.0.self_attn.o_proj.weight", {7, 6}, GradReduction::kDenseDataCp, 0.5f);
  set->Initialize(3);
  return set;
}

TEST(ShardedAdamWMpiTest, ScaledStepEqualsTheSegmentStepOnScaledGradients) {
  parallel::MpiCommunicator world = parallel::MpiCommunicator::World("dp");
  parallel::GradSyncGroups groups;
  groups.dp_cp = &world;
  groups.tp_cp_dp = &world;
  parallel::GradSyncOptions options;
  options.zero1 = true;
  options.bucket_elements = 24;  // several buckets, shards cutting through segments and gaps
  auto set = SmallModel(), reference = SmallModel();
  set->Flatten(parallel::GradSync::Alignment(groups), /*segment_align=*/4);
  reference->Flatten(parallel::GradSync::Alignment(groups), /*segment_align=*/4);
  parallel::GradSync sync(set.get(), groups, options),
      reference_sync(reference.get(), groups, options);
  const AdamWOptions adam{.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  ShardedAdamW opt(&sync, adam), reference_opt(&reference_sync, adam);
  const float scale = 0.125f;
  const Tensor grad_scale = Tensor::FromVector({scale}, {1});
  for (int64_t step = 1; step <= 3; ++step) {
    // Each rank's own gradients (the reduction sums them).
    uint64_t seed = 1000 * static_cast<uint64_t>(step) + 10 * static_cast<uint64_t>(world.rank());
    for (ParameterSet* s : {set.get(), reference.get()}) {
      uint64_t param_seed = seed;
      for (const auto& p : s->params()) {
        p->grad.CopyFrom(testing::RandomNormal(p->grad.shape(), ++param_seed));
      }
    }
    for (parallel::GradSync* s : {&sync, &reference_sync}) {
      s->BeginStep(step);
      ASSERT_TRUE(s->Finish().ok());
    }
    for (Tensor* g : reference_sync.OwnedGrads()) {
      for (int64_t i = 0; i < g->numel(); ++i) g->data<float>()[i] *= scale;
    }
    ASSERT_TRUE(opt.Step(0.01f, grad_scale, CpuStream()).ok());
    ASSERT_TRUE(reference_opt.Step(0.01f).ok());
  }
  for (size_t i = 0; i < set->params().size(); ++i) {
    EXPECT_EQ(set->params()[i]->value.ToVector(), reference->params()[i]->value.ToVector())
        << "rank " << world.rank() << ": " << set->params()[i]->name;
  }
}

}  // namespace
}  // namespace moefold::optim
