// Each layer's backward against finite differences of its forward, separately: attention, the
// SwiGLU MLP and the MoE layer (router, aux and z losses, shared experts), for both the input
// gradient and every parameter's gradient. L = ⟨y, c⟩ (+ seeded aux/z terms for MoE).
#include <cmath>
#include <functional>

#include "core/model/attention_layer.h"
#include "core/model/mlp_layer.h"
#include "core/model/moe_layer.h"
#include "core/philox.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

ModelSpec Spec() {
  ModelSpec spec;
  spec.vocab = 11;
  spec.hidden = 8;
  spec.num_layers = 1;
  spec.num_heads = 2;
  spec.num_kv_heads = 1;
  spec.head_dim = 4;
  spec.init_std = 0.4f;
  spec.moe_layer = {true};
  spec.moe.num_experts = 4;
  spec.moe.top_k = 2;
  spec.moe.expert_ffn = 5;
  spec.moe.num_shared_experts = 1;
  spec.moe.shared_ffn = 3;
  spec.moe.topk.k = 2;
  spec.moe.aux_type = AuxLossType::kSequence;
  spec.moe.aux_coeff = 0.2f;
  spec.moe.z_coeff = 0.05f;
  return spec;
}

MicroBatch Batch(int64_t b, int64_t s) {
  MicroBatch batch;
  batch.tokens = Tensor::Zeros({b, s}, DType::kI32);
  batch.targets = Tensor::Zeros({b, s}, DType::kI32);
  batch.positions = Tensor::Empty({s}, DType::kI32);
  for (int64_t i = 0; i < s; ++i) batch.positions.data<int32_t>()[i] = static_cast<int32_t>(i + 3);
  return WithDeviceCopies(batch, CpuStream());  // the layers read the kernels' copies
}

// Checks the analytic gradients d_x (given) and every parameter's grad against central differences
// of `loss` at a sample of coordinates.
void ExpectGradientsMatch(const std::function<double()>& loss, Tensor* x, const Tensor& d_x,
                          ParameterSet* params) {
  PhiloxStream pick(17, 0);
  auto check = [&](Tensor* value, const Tensor& grad, const std::string& what) {
    float* v = value->data<float>();
    for (int trial = 0; trial < 8; ++trial) {
      const int64_t i = pick.NextU32() % value->numel();
      const float saved = v[i];
      const double eps = 1e-2;
      v[i] = saved + static_cast<float>(eps);
      const double plus = loss();
      v[i] = saved - static_cast<float>(eps);
      const double minus = loss();
      v[i] = saved;
      const double numeric = (plus - minus) / (2 * eps), analytic = grad.ToVector()[i];
      EXPECT_NEAR(analytic, numeric, 2e-3 + 3e-2 * std::fabs(numeric)) << what << "[" << i << "]";
    }
  };
  check(x, d_x, "d_x");
  for (const auto& p : params->params()) check(&p->value, p->grad, p->name);
}

TEST(LayerGradientTest, Attention) {
  const ModelSpec spec = Spec();
  ParameterSet params;
  RopeTables rope(spec.head_dim, spec.rope_theta);
  AttentionLayer layer(spec, {}, "l", &params, &rope);
  params.Initialize(1);
  const MicroBatch batch = Batch(2, 5);
  StepContext ctx{&CpuStream()};
  Tensor x = RandomNormal({10, 8}, 2);
  const Tensor c = RandomNormal({10, 8}, 3);
  auto loss = [&]() {
    AttentionLayer::Saved saved;
    Tensor y = Tensor::Empty({10, 8}, DType::kF32);
    MF_CHECK(layer.Forward(ctx, batch, x, &saved, &y).ok());
    return Dot(y, c);
  };
  AttentionLayer::Saved saved;
  Tensor y = Tensor::Empty({10, 8}, DType::kF32);
  ASSERT_OK(layer.Forward(ctx, batch, x, &saved, &y));
  Tensor d_x = Tensor::Zeros({10, 8}, DType::kF32);
  ASSERT_OK(layer.Backward(ctx, batch, saved, c, &d_x));
  ExpectGradientsMatch(loss, &x, d_x, &params);
}

TEST(LayerGradientTest, SwiGluMlp) {
  const ModelSpec spec = Spec();
  ParameterSet params;
  SwiGluMlp mlp(spec, {}, "m", 6, &params);
  params.Initialize(4);
  StepContext ctx{&CpuStream()};
  Tensor x = RandomNormal({7, 8}, 5);
  const Tensor c = RandomNormal({7, 8}, 6);
  auto loss = [&]() {
    SwiGluMlp::Saved saved;
    Tensor y = Tensor::Empty({7, 8}, DType::kF32);
    MF_CHECK(mlp.Forward(ctx, x, &saved, &y).ok());
    return Dot(y, c);
  };
  SwiGluMlp::Saved saved;
  Tensor y = Tensor::Empty({7, 8}, DType::kF32);
  ASSERT_OK(mlp.Forward(ctx, x, &saved, &y));
  Tensor d_x = Tensor::Zeros({7, 8}, DType::kF32);
  ASSERT_OK(mlp.Backward(ctx, saved, c, &d_x));
  ExpectGradientsMatch(loss, &x, d_x, &params);
}

TEST(LayerGradientTest, MoeWithAuxZLossAndSharedExperts) {
  const ModelSpec spec = Spec();
  ParameterSet params;
  MoeLayer moe(spec, {}, "m", &params);
  params.Initialize(7);
  const MicroBatch batch = Batch(2, 4);
  StepContext ctx{&CpuStream()};
  Tensor x = RandomNormal({8, 8}, 8);
  const Tensor c = RandomNormal({8, 8}, 9);
  const BackwardSeeds seeds{{}, 0.7f, 0.9f};
  // The aux and z losses are added up in the context's device sums.
  auto loss = [&]() {
    MoeLayer::Saved saved;
    ForwardStats stats;
    Tensor y = Tensor::Empty({8, 8}, DType::kF32);
    ctx.ResetDeviceSums();
    MF_CHECK(moe.Forward(ctx, batch, x, &saved, &y, &stats).ok());
    const std::vector<float> sums = ctx.device_sums.ToVector();
    return Dot(y, c) + seeds.aux_grad_scale * sums[kAuxLossSum] +
           seeds.z_grad_scale * sums[kZLossSum];
  };
  MoeLayer::Saved saved;
  ForwardStats stats;
  Tensor y = Tensor::Empty({8, 8}, DType::kF32);
  ctx.ResetDeviceSums();
  ASSERT_OK(moe.Forward(ctx, batch, x, &saved, &y, &stats));
  EXPECT_EQ(stats.aux_units, 2);  // sequence-level: one term per sequence
  EXPECT_GT(ctx.device_sums.ToVector()[kAuxLossSum], 0.0);
  EXPECT_GT(ctx.device_sums.ToVector()[kZLossSum], 0.0);
  Tensor d_x = Tensor::Zeros({8, 8}, DType::kF32);
  ASSERT_OK(moe.Backward(ctx, saved, c, seeds, &d_x));
  ExpectGradientsMatch(loss, &x, d_x, &params);
}

}  // namespace
}  // namespace moefold::model
