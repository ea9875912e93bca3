// Tests of AdamW over a ParameterSet: hand-computed steps, no decay for weight_decay=false
// parameters, the step count driving bias correction, and the m/v state accessors; flat mode equal
// bit for bit to the per-parameter optimizer (with norms, gaps, a bf16 compute copy), its no-decay
// ranges, checkpoint views, and ZeRO-1's scaled step equal to its per-segment step.
#include "optim/adamw.h"

#include <cmath>
#include <memory>
#include <vector>

#include "optim/zero1_adamw.h"
#include "parallel/grad_sync.h"
#include "tests/testing/testing.h"

namespace moefold::optim {
namespace {

// One PyTorch AdamW step in f64 for a scalar (the hand formula of ops/adamw.h).
struct Scalar {
  double p, m = 0, v = 0;
};
void ReferenceStep(Scalar& s, double g, double lr, double b1, double b2, double eps, double wd,
                   int t) {
  s.p *= 1.0 - lr * wd;
  s.m = b1 * s.m + (1 - b1) * g;
  s.v = b2 * s.v + (1 - b2) * g * g;
  const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
  s.p -= lr / bc1 * s.m / (std::sqrt(s.v) / std::sqrt(bc2) + eps);
}

class AdamWOverSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    w_ = params_.Add("model.layers.0.mlp.weight", {2}, GradReduction::kDenseDataCp, 0.0f,
                     /*weight_decay=*/true, /*init_value=*/1.0f);
    norm_ = params_.Add("model.layers.0.norm.weight", {1}, GradReduction::kDenseDataCpTp, 0.0f,
                        /*weight_decay=*/false, /*init_value=*/1.0f);
    params_.Initialize(1);
  }
  ParameterSet params_;
  Parameter* w_ = nullptr;
  Parameter* norm_ = nullptr;
};

TEST_F(AdamWOverSetTest, FirstStepMatchesHandValues) {
  AdamW opt(&params_, {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f});
  EXPECT_EQ(opt.step_count(), 0);
  w_->grad.CopyFrom(Tensor::FromVector({0.5f, -2.0f}, {2}));
  norm_->grad.CopyFrom(Tensor::FromVector({0.25f}, {1}));
  opt.Step(0.1f);
  EXPECT_EQ(opt.step_count(), 1);
  // Step 1: m̂ = g, v̂ = g², so p = p·(1 − lr·wd) − lr·sign(g) (up to eps).
  EXPECT_TENSOR_NEAR(w_->value, Tensor::FromVector({0.99f - 0.1f, 0.99f + 0.1f}, {2}), 1e-6, 1e-7);
  // The norm weight is not decayed: 1 − 0.1, not 0.99 − 0.1.
  EXPECT_TENSOR_NEAR(norm_->value, Tensor::FromVector({0.9f}, {1}), 1e-6, 1e-7);
  // State: m = (1 − β1)·g, v = (1 − β2)·g² per parameter index.
  EXPECT_TENSOR_NEAR(opt.m(0), Tensor::FromVector({0.05f, -0.2f}, {2}), 1e-5, 0);
  EXPECT_TENSOR_NEAR(opt.v(0), Tensor::FromVector({2.5e-4f, 4e-3f}, {2}), 1e-4, 0);
  EXPECT_TENSOR_NEAR(opt.m(1), Tensor::FromVector({0.025f}, {1}), 1e-5, 0);
  EXPECT_TENSOR_NEAR(opt.v(1), Tensor::FromVector({6.25e-5f}, {1}), 1e-4, 0);
}

TEST_F(AdamWOverSetTest, TwoStepsMatchF64Reference) {
  const double lr = 0.05, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.2;
  AdamW opt(&params_, {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.2f});
  Scalar w0{1.0}, w1{1.0}, n0{1.0};
  const float g1[3] = {0.3f, -1.5f, 0.7f}, g2[3] = {-0.1f, -0.4f, 2.0f};
  for (int t = 1; t <= 2; ++t) {
    const float* g = t == 1 ? g1 : g2;
    w_->grad.CopyFrom(Tensor::FromVector({g[0], g[1]}, {2}));
    norm_->grad.CopyFrom(Tensor::FromVector({g[2]}, {1}));
    opt.Step(static_cast<float>(lr));
    ReferenceStep(w0, g[0], lr, b1, b2, eps, wd, t);
    ReferenceStep(w1, g[1], lr, b1, b2, eps, wd, t);
    ReferenceStep(n0, g[2], lr, b1, b2, eps, /*wd=*/0.0, t);
  }
  EXPECT_EQ(opt.step_count(), 2);
  // ~1e-6: the options are f32 (β2 = 0.95f is not 0.95), the reference f64.
  EXPECT_NEAR(w_->value.data<float>()[0], w0.p, 2e-6);
  EXPECT_NEAR(w_->value.data<float>()[1], w1.p, 2e-6);
  EXPECT_NEAR(norm_->value.data<float>()[0], n0.p, 2e-6);
  EXPECT_NEAR(opt.m(0).data<float>()[1], w1.m, 1e-6);
  EXPECT_NEAR(opt.v(1).data<float>()[0], n0.v, 1e-6);
}

TEST_F(AdamWOverSetTest, StepCountDrivesBiasCorrection) {
  // Restoring the step count (as a checkpoint would) changes the bias correction: at t = 1 the
  // update is lr·sign(g); at t = 101 with zero moments m̂ and v̂ are biased low differently.
  AdamWOptions options{.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f};
  AdamW fresh(&params_, options);
  w_->grad.Fill(1.0f);
  norm_->grad.Fill(1.0f);
  fresh.Step(0.1f);
  const float after_first = w_->value.data<float>()[0];
  EXPECT_NEAR(after_first, 0.9f, 1e-6);

  ParameterSet other;
  Parameter* p = other.Add("w", {1}, GradReduction::kDenseDataCp, 0.0f, true, 1.0f);
  other.Initialize(1);
  AdamW resumed(&other, options);
  resumed.set_step_count(100);
  p->grad.Fill(1.0f);
  resumed.Step(0.1f);
  EXPECT_EQ(resumed.step_count(), 101);
  // m̂ = 0.1/(1 − 0.9^101) ≈ 0.1, v̂ = 0.001/(1 − 0.999^101) ≈ 0.0104: update ≈ 0.1·0.1/0.102.
  const double bc1 = 1 - std::pow(0.9, 101), bc2 = 1 - std::pow(0.999, 101);
  const double expected = 1.0 - 0.1 * (0.1 / bc1) / (std::sqrt(0.001 / bc2) + 1e-8);
  EXPECT_NEAR(p->value.data<float>()[0], expected, 1e-5);
  EXPECT_GT(p->value.data<float>()[0] - after_first, 1e-3f);  // ≈ 0.90196 vs 0.9
}

TEST_F(AdamWOverSetTest, RestoredStateContinuesIdentically) {
  AdamWOptions options{.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  AdamW a(&params_, options);
  w_->grad.CopyFrom(Tensor::FromVector({0.3f, -0.6f}, {2}));
  norm_->grad.Fill(0.2f);
  a.Step(0.01f);

  // Copy parameters and optimizer state into a fresh set and optimizer, then step both.
  ParameterSet copy;
  Parameter* cw = copy.Add(w_->name, {2}, GradReduction::kDenseDataCp, 0.0f, true);
  Parameter* cn = copy.Add(norm_->name, {1}, GradReduction::kDenseDataCpTp, 0.0f, false);
  cw->value.CopyFrom(w_->value);
  cn->value.CopyFrom(norm_->value);
  AdamW b(&copy, options);
  b.set_step_count(a.step_count());
  for (int64_t i = 0; i < a.num_params(); ++i) {
    b.m(i).CopyFrom(a.m(i));
    b.v(i).CopyFrom(a.v(i));
  }
  w_->grad.CopyFrom(Tensor::FromVector({-0.1f, 0.9f}, {2}));
  cw->grad.CopyFrom(w_->grad);
  norm_->grad.Fill(-0.4f);
  cn->grad.Fill(-0.4f);
  a.Step(0.01f);
  b.Step(0.01f);
  EXPECT_EQ(cw->value.ToVector(), w_->value.ToVector());
  EXPECT_EQ(cn->value.ToVector(), norm_->value.ToVector());
}

// A small model: two dense weights and a norm in one reduction group, a router and a norm in
// another (weight_decay false for the norms), values drawn from the same seed in every copy.
std::unique_ptr<ParameterSet> SmallModel() {
  auto set = std::make_unique<ParameterSet>();
  set->Add("model.layers.0.self_attn.q_proj.weight", {3, 5}, GradReduction::kDenseDataCp, 0.5f);
  set->Add("model.layers.0.input_layernorm.weight", {5}, GradReduction::kDenseDataCp, 0.0f,
           /*weight_decay=*/false, /*init_value=*/1.0f);
  set->Add("model.layers.0.mlp.gate.weight", {2, 5}, GradReduction::kDenseDataCpTp, 0.5f);
  set->Add("model.layers.0.post_attention_layernorm.weight", {5}, GradReduction::kDenseDataCpTp,
           0.0f, /*weight_decay=*/false, /*init_value=*/1.0f);
  set->Add("model.layers.0.self_attn.o_proj.weight", {5, 3}, GradReduction::kDenseDataCp, 0.5f);
  set->Initialize(7);
  return set;
}

// Fills every gradient with fresh normals for `step`.
void FillGrads(ParameterSet* set, int64_t step) {
  uint64_t seed = 100 * static_cast<uint64_t>(step);
  for (const auto& p : set->params())
    p->grad.CopyFrom(testing::RandomNormal(p->grad.shape(), ++seed));
}

TEST(NoDecayRangesTest, SegmentsOfNormsRelativeToTheRange) {
  auto set = SmallModel();
  std::vector<FlatBuffer>& buffers = set->Flatten(/*align=*/8, /*segment_align=*/4);
  // Buffer 0 (DP×CP): q_proj [0, 15), norm [16, 21), o_proj [24, 39).
  const FlatBuffer& dense = buffers[0];
  EXPECT_EQ(NoDecayRanges(dense, 0, dense.values.numel()).ToVector(), (std::vector<float>{16, 21}));
  EXPECT_EQ(NoDecayRanges(dense, 18, 30).ToVector(), (std::vector<float>{0, 3}));
  EXPECT_EQ(NoDecayRanges(dense, 21, 40).numel(), 0);
  // Buffer 1 (TP×DP×CP): router [0, 10), norm [12, 17).
  EXPECT_EQ(NoDecayRanges(buffers[1], 0, 24).ToVector(), (std::vector<float>{12, 17}));
}

TEST(FlatAdamWTest, EqualsThePerParameterOptimizerBitForBit) {
  auto flat_set = SmallModel();
  auto plain_set = SmallModel();
  flat_set->Flatten(/*align=*/8, /*segment_align=*/4);  // gaps between segments, padding at the end
  const AdamWOptions options{.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  AdamW flat(flat_set.get(), options), plain(plain_set.get(), options);
  ASSERT_TRUE(flat.flat());
  ASSERT_FALSE(plain.flat());
  const float scale = 0.3f;
  const Tensor grad_scale = Tensor::FromVector({scale}, {1});
  for (int64_t step = 1; step <= 3; ++step) {
    FillGrads(flat_set.get(), step);
    FillGrads(plain_set.get(), step);
    for (const auto& p : plain_set->params()) {
      for (int64_t i = 0; i < p->grad.numel(); ++i) p->grad.data<float>()[i] *= scale;
    }
    flat.Step(0.01f, grad_scale, CpuStream());
    plain.Step(0.01f);
  }
  EXPECT_EQ(flat.step_count(), 3);
  for (size_t i = 0; i < plain_set->params().size(); ++i) {
    EXPECT_EQ(flat_set->params()[i]->value.ToVector(), plain_set->params()[i]->value.ToVector())
        << plain_set->params()[i]->name;
    EXPECT_EQ(flat.m(i).ToVector(), plain.m(i).ToVector());
    EXPECT_EQ(flat.v(i).ToVector(), plain.v(i).ToVector());
    EXPECT_EQ(flat.m(i).shape(), plain.m(i).shape());
  }
  // Gaps and padding hold zeros and stay zero.
  for (const FlatBuffer& b : flat_set->flat_buffers()) {
    for (int64_t i = b.used; i < b.values.numel(); ++i) EXPECT_EQ(b.values.data<float>()[i], 0.0f);
  }
}

TEST(FlatAdamWTest, WritesTheBf16ComputeCopyAndKeepsTheOldStep) {
  auto set = SmallModel();
  auto reference = SmallModel();
  set->Flatten(8, 4, Device::Cpu(), DType::kBF16);
  reference->Flatten(8, 4, Device::Cpu(), DType::kBF16);
  const AdamWOptions options{.weight_decay = 0.1f};
  AdamW flat(set.get(), options), old(reference.get(), options);
  const Tensor one = Tensor::FromVector({1.0f}, {1});
  for (int64_t step = 1; step <= 2; ++step) {
    FillGrads(set.get(), step);
    FillGrads(reference.get(), step);
    flat.Step(0.02f, one, CpuStream());
    old.Step(0.02f);  // the per-parameter path over the flat views, then a separate conversion
    reference->RefreshCompute(CpuStream());
  }
  for (size_t b = 0; b < set->flat_buffers().size(); ++b) {
    const FlatBuffer& mine = set->flat_buffers()[b];
    const FlatBuffer& theirs = reference->flat_buffers()[b];
    EXPECT_EQ(mine.values.ToVector(), theirs.values.ToVector());
    EXPECT_EQ(mine.compute.ToVector(), theirs.compute.ToVector());
    EXPECT_EQ(mine.compute.ToVector(), mine.values.To(DType::kBF16).ToVector());
  }
}

TEST(FlatAdamWTest, CheckpointViewsRestoreTheFlatState) {
  auto a_set = SmallModel();
  auto b_set = SmallModel();
  a_set->Flatten(8, 4);
  b_set->Flatten(8, 4);
  const AdamWOptions options{.weight_decay = 0.1f};
  AdamW a(a_set.get(), options), b(b_set.get(), options);
  const Tensor half = Tensor::FromVector({0.5f}, {1});
  FillGrads(a_set.get(), 1);
  a.Step(0.01f, half, CpuStream());
  // Restore parameters and moments into b through the per-parameter views, then step both.
  b.set_step_count(a.step_count());
  for (int64_t i = 0; i < a.num_params(); ++i) {
    b_set->params()[i]->value.CopyFrom(a_set->params()[i]->value);
    b.m(i).CopyFrom(a.m(i));
    b.v(i).CopyFrom(a.v(i));
  }
  FillGrads(a_set.get(), 2);
  FillGrads(b_set.get(), 2);
  a.Step(0.01f, half, CpuStream());
  b.Step(0.01f, half, CpuStream());
  for (int64_t i = 0; i < a.num_params(); ++i) {
    EXPECT_EQ(b_set->params()[i]->value.ToVector(), a_set->params()[i]->value.ToVector());
  }
}

TEST(FlatAdamWTest, ScaledStepWithoutFlatBuffersMatchesTheOldStep) {
  auto set = SmallModel();
  auto reference = SmallModel();
  const AdamWOptions options{.weight_decay = 0.1f};
  AdamW scaled(set.get(), options), old(reference.get(), options);
  FillGrads(set.get(), 1);
  FillGrads(reference.get(), 1);
  for (const auto& p : reference->params()) {
    for (int64_t i = 0; i < p->grad.numel(); ++i) p->grad.data<float>()[i] *= 4.0f;
  }
  scaled.Step(0.05f, Tensor::FromVector({4.0f}, {1}), CpuStream());
  old.Step(0.05f);
  for (size_t i = 0; i < set->params().size(); ++i) {
    EXPECT_EQ(set->params()[i]->value.ToVector(), reference->params()[i]->value.ToVector());
  }
}

TEST(ShardedAdamWTest, ScaledStepEqualsTheSegmentStep) {
  auto set = SmallModel();
  auto reference = SmallModel();
  const parallel::GradSyncGroups groups;  // one rank: each bucket's shard is the whole bucket
  set->Flatten(parallel::GradSync::Alignment(groups), 4);
  reference->Flatten(parallel::GradSync::Alignment(groups), 4);
  parallel::GradSyncOptions sync_options;
  sync_options.zero1 = true;
  sync_options.bucket_elements = 16;  // several buckets
  parallel::GradSync sync(set.get(), groups, sync_options);
  parallel::GradSync reference_sync(reference.get(), groups, sync_options);
  const AdamWOptions options{.weight_decay = 0.1f};
  ShardedAdamW opt(&sync, options), reference_opt(&reference_sync, options);
  for (int64_t step = 1; step <= 2; ++step) {
    FillGrads(set.get(), step);
    FillGrads(reference.get(), step);
    for (parallel::GradSync* s : {&sync, &reference_sync}) {
      s->BeginStep(step);
      ASSERT_OK(s->Finish());
    }
    for (Tensor* g : reference_sync.OwnedGrads()) {
      for (int64_t i = 0; i < g->numel(); ++i) g->data<float>()[i] *= 0.25f;
    }
    ASSERT_OK(opt.Step(0.01f, Tensor::FromVector({0.25f}, {1}), CpuStream()));
    ASSERT_OK(reference_opt.Step(0.01f));
  }
  for (size_t i = 0; i < set->params().size(); ++i) {
    EXPECT_EQ(set->params()[i]->value.ToVector(), reference->params()[i]->value.ToVector())
        << set->params()[i]->name;
  }
}

TEST(AdamWDeathTest, ParametersAddedAfterCreationAreRejected) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  ParameterSet params;
  params.Add("a", {1}, GradReduction::kDenseDataCp, 0.0f);
  AdamW opt(&params, {});
  params.Add("b", {1}, GradReduction::kDenseDataCp, 0.0f);
  EXPECT_DEATH(opt.Step(0.1f), "added to the set after the optimizer");
  EXPECT_DEATH(opt.m(5), "parameter index 5");
}

}  // namespace
}  // namespace moefold::optim
