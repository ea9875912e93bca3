// The decoder's backward against finite differences of its forward, for a tiny model with dense and
// MoE layers (router, aux loss, z-loss, shared experts), and the parameter table's names/groups.
#include "core/model/decoder.h"

#include <cmath>

#include "core/philox.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

ModelSpec TinySpec(ops::ScoreFunction score, AuxLossType aux) {
  ModelSpec spec;
  spec.vocab = 11;
  spec.hidden = 8;
  spec.num_layers = 2;
  spec.num_heads = 2;
  spec.num_kv_heads = 1;
  spec.head_dim = 4;
  spec.ffn = 12;
  spec.init_std = 0.3f;  // large enough that every path carries signal
  spec.moe_layer = {false, true};
  spec.moe.num_experts = 4;
  spec.moe.top_k = 2;
  spec.moe.expert_ffn = 6;
  spec.moe.num_shared_experts = 1;
  spec.moe.shared_ffn = 5;
  spec.moe.topk.k = 2;
  spec.moe.topk.score = score;
  spec.moe.topk.normalize = score != ops::ScoreFunction::kSoftmaxPost;
  spec.moe.aux_type = aux;
  spec.moe.aux_coeff = 0.1f;
  spec.moe.z_coeff = 0.01f;
  return spec;
}

MicroBatch TinyBatch(int64_t b, int64_t s, int vocab, uint64_t seed) {
  MicroBatch batch;
  batch.tokens = testing::RandomInts({b, s}, seed, vocab);
  batch.targets = testing::RandomInts({b, s}, seed + 1, vocab);
  batch.targets.data<int32_t>()[1] = -1;  // an ignored target
  batch.positions = Tensor::Empty({s}, DType::kI32);
  for (int64_t i = 0; i < s; ++i) batch.positions.data<int32_t>()[i] = static_cast<int32_t>(i);
  return batch;
}

// L = Σ_b c_b·ℓ_b + a·aux_sum + z·z_sum, the objective BackwardSeeds{c, a, z} differentiates (the
// aux and z sums from the context's device sums).
double Objective(const ForwardStats& stats, const StepContext& ctx, const BackwardSeeds& seeds) {
  const std::vector<float> sums = ctx.device_sums.ToVector();
  double loss = sums[kAuxLossSum] * seeds.aux_grad_scale + sums[kZLossSum] * seeds.z_grad_scale;
  for (size_t i = 0; i < stats.sample_losses.size(); ++i) {
    loss += static_cast<double>(seeds.d_sample_loss[i]) * stats.sample_losses[i];
  }
  return loss;
}

class DecoderGradientTest
    : public ::testing::TestWithParam<std::tuple<ops::ScoreFunction, AuxLossType>> {};

TEST_P(DecoderGradientTest, BackwardMatchesFiniteDifferences) {
  const auto [score, aux] = GetParam();
  const ModelSpec spec = TinySpec(score, aux);
  ParameterSet params;
  Decoder model(spec, {}, &params);
  params.Initialize(7);
  const MicroBatch batch = TinyBatch(2, 5, spec.vocab, 3);
  StepContext ctx{&CpuStream()};
  BackwardSeeds seeds{{0.7f, 1.3f}, 0.9f, 0.8f};

  params.ZeroGrads(CpuStream());
  Decoder::Saved saved;
  ctx.ResetDeviceSums();
  auto forward = model.Forward(ctx, batch, &saved);
  ASSERT_OK(forward);
  const ForwardStats& stats = *forward;
  ASSERT_EQ(stats.sample_losses.size(), 2u);
  EXPECT_EQ(stats.sample_tokens[0], 4);  // one ignored target
  if (aux != AuxLossType::kNone) {
    EXPECT_GT(ctx.device_sums.ToVector()[kAuxLossSum], 0.0);
  }
  ASSERT_OK(model.Backward(ctx, batch, saved, seeds));

  // f64 would be ideal; f32 forward with eps 1e-2 is accurate to ~1e-3 relative on these sizes.
  // Routing is piecewise constant: a perturbation that flips a top-k choice changes the function
  // itself, so such coordinates are skipped (the choices are compared with the unperturbed ones),
  // and the objective is checked on a sample of coordinates of every parameter.
  auto choices = [](const Decoder::Saved& s) {
    std::vector<float> ids;
    for (const Decoder::BlockSaved& b : s.blocks) {
      if (!b.moe.plan.ids.defined()) continue;
      for (float id : b.moe.plan.ids.ToVector()) ids.push_back(id);
    }
    return ids;
  };
  const std::vector<float> base_choices = choices(saved);
  int checked = 0, flipped = 0, bad = 0;
  PhiloxStream pick(11, 0);
  for (const auto& p : params.params()) {
    float* v = p->value.data<float>();
    for (int trial = 0; trial < 6; ++trial) {
      const int64_t i = pick.NextU32() % p->value.numel();
      const float saved_value = v[i];
      const double eps = 1e-2;
      bool same_routing = true;
      auto eval = [&](float value) {
        v[i] = value;
        Decoder::Saved s;
        ctx.ResetDeviceSums();
        auto st = model.Forward(ctx, batch, &s);
        MF_CHECK(st.ok()) << st.status();
        same_routing = same_routing && choices(s) == base_choices;
        return Objective(*st, ctx, seeds);
      };
      const double numeric =
          (eval(saved_value + eps) - eval(saved_value - eps)) / (2 * eps);
      v[i] = saved_value;
      if (!same_routing) {
        ++flipped;
        continue;
      }
      const double analytic = p->grad.data<float>()[i];
      const double err = std::fabs(numeric - analytic);
      ++checked;
      if (err > 2e-3 + 3e-2 * std::fabs(numeric)) {
        ++bad;
        ADD_FAILURE() << p->name << "[" << i << "]: analytic " << analytic << " numeric "
                      << numeric;
      }
    }
  }
  EXPECT_GT(checked, 50);
  EXPECT_LE(flipped, checked / 10) << "too many perturbations flipped a routing choice";
  EXPECT_EQ(bad, 0);
}

INSTANTIATE_TEST_SUITE_P(
    ScoresAndAux, DecoderGradientTest,
    ::testing::Values(std::make_tuple(ops::ScoreFunction::kSoftmaxPost, AuxLossType::kBatch),
                      std::make_tuple(ops::ScoreFunction::kSoftmaxPre, AuxLossType::kSequence),
                      std::make_tuple(ops::ScoreFunction::kSigmoid, AuxLossType::kNone)));

// Without a reweighting the per-sample losses stay on the device: their sum is the host path's.
TEST(DecoderTest, SampleLossesSumOnTheDeviceWhenTheHostNeedsNone) {
  const ModelSpec spec = TinySpec(ops::ScoreFunction::kSoftmaxPost, AuxLossType::kBatch);
  ParameterSet params;
  Decoder model(spec, {}, &params);
  params.Initialize(3);
  const MicroBatch batch = TinyBatch(2, 5, spec.vocab, 3);
  StepContext host{&CpuStream()};
  host.ResetDeviceSums();
  Decoder::Saved saved;
  auto on_host = model.Forward(host, batch, &saved);
  ASSERT_OK(on_host);
  StepContext device{&CpuStream()};
  device.ResetDeviceSums();
  device.sample_losses_on_host = false;
  auto on_device = model.Forward(device, batch, &saved);
  ASSERT_OK(on_device);
  EXPECT_TRUE(on_device->sample_losses.empty());
  EXPECT_EQ(on_device->sample_tokens, on_host->sample_tokens);
  EXPECT_NEAR(device.device_sums.ToVector()[kSampleLossSum],
              on_host->sample_losses[0] + on_host->sample_losses[1], 1e-5);
  EXPECT_EQ(host.device_sums.ToVector()[kSampleLossSum], 0.0f);
  EXPECT_EQ(device.device_sums.ToVector()[kAuxLossSum], host.device_sums.ToVector()[kAuxLossSum]);
}

TEST(DecoderTest, ParametersCarryNamesShardingAndReductionGroups) {
  const ModelSpec spec = TinySpec(ops::ScoreFunction::kSoftmaxPost, AuxLossType::kBatch);
  ParameterSet params;
  Decoder model(spec, {}, &params);
  const Parameter* expert = params.Find("model.layers.1.mlp.experts.gate_up_proj.weight");
  ASSERT_NE(expert, nullptr);
  EXPECT_EQ(expert->reduction, GradReduction::kExpertData);
  EXPECT_EQ(expert->sharding.expert_dim, 0);
  EXPECT_EQ(expert->value.shape(), (Shape{4, 2, 6, 8}));
  EXPECT_EQ(expert->ExpertName(3), "model.layers.1.mlp.experts.3.gate_up_proj.weight");
  // Q, K and V in one tensor grouped per KV head (2 groups of 2 query heads, a key and a value).
  const Parameter* qkv = params.Find("model.layers.0.self_attn.qkv_proj.weight");
  ASSERT_NE(qkv, nullptr);
  EXPECT_EQ(qkv->value.shape(), (Shape{spec.num_kv_heads,
                                       (spec.num_heads / spec.num_kv_heads + 2) * spec.head_dim,
                                       spec.hidden}));
  EXPECT_EQ(params.Find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  const Parameter* router = params.Find("model.layers.1.mlp.gate.weight");
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->reduction, GradReduction::kDenseDataCpTp);
  // Without sequence parallelism every TP rank normalises the same tokens: no TP sum.
  EXPECT_EQ(params.Find("model.layers.0.input_layernorm.weight")->reduction,
            GradReduction::kReplicatedDataCp);
  EXPECT_FALSE(params.Find("model.layers.0.input_layernorm.weight")->weight_decay);
  EXPECT_EQ(params.Find("model.layers.0.mlp.down_proj.weight")->reduction,
            GradReduction::kDenseDataCp);
  EXPECT_EQ(params.Find("model.layers.0.self_attn.o_proj.weight")->sharding.tp_dim, 1);
  EXPECT_NE(params.Find("lm_head.weight"), nullptr);
  EXPECT_NE(params.Find("model.layers.1.mlp.shared_experts.gate_up_proj.weight"), nullptr);
}

TEST(DecoderTest, SequenceParallelNormsSumOverTp) {
  const ModelSpec spec = TinySpec(ops::ScoreFunction::kSoftmaxPost, AuxLossType::kBatch);
  ParameterSet params;
  Decoder model(spec, {.sequence_parallel = true}, &params);
  for (const char* name : {"model.layers.0.input_layernorm.weight",
                           "model.layers.1.post_attention_layernorm.weight", "model.norm.weight",
                           "model.layers.1.mlp.gate.weight"}) {
    EXPECT_EQ(params.Find(name)->reduction, GradReduction::kDenseDataCpTp) << name;
  }
}

TEST(DecoderTest, TokenOutsideTheVocabularyIsAnError) {
  const ModelSpec spec = TinySpec(ops::ScoreFunction::kSoftmaxPost, AuxLossType::kBatch);
  ParameterSet params;
  Decoder model(spec, {}, &params);
  params.Initialize(1);
  MicroBatch batch = TinyBatch(2, 5, spec.vocab, 3);
  batch.tokens.data<int32_t>()[7] = spec.vocab;
  StepContext ctx{&CpuStream()};
  Decoder::Saved saved;
  auto stats = model.Forward(ctx, batch, &saved);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(stats.status().message().find("token id 11 at sequence 1 position 2"),
            absl::string_view::npos)
      << stats.status();
}

TEST(DecoderTest, InitialisationIsDeterministicPerName) {
  const ModelSpec spec = TinySpec(ops::ScoreFunction::kSoftmaxPost, AuxLossType::kBatch);
  ParameterSet a, b;
  Decoder ma(spec, {}, &a), mb(spec, {}, &b);
  a.Initialize(5);
  b.Initialize(5);
  for (size_t i = 0; i < a.params().size(); ++i) {
    EXPECT_EQ(a.params()[i]->value.ToVector(), b.params()[i]->value.ToVector());
  }
  ParameterSet c;
  Decoder mc(spec, {}, &c);
  c.Initialize(6);
  const std::string name = "model.layers.1.mlp.experts.gate_up_proj.weight";
  EXPECT_NE(a.Find(name)->value.ToVector(), c.Find(name)->value.ToVector());
}

}  // namespace
}  // namespace moefold::model
