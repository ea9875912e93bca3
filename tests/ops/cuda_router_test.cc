// GPU parity of the router math: the logits GEMM and its backward (bf16 and f32 rows, vector and
// scalar paths, odd sizes, several token ranges), top-k selection (identical ids) and weights for
// every score function, group-limited routing and the expert bias, their backward, softmax, aux and
// z losses (accumulated on the device), against the CPU reference (skips without a GPU).
#include <cmath>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "ops/router.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

// (T, H, E, x dtype): H = 2048 takes the 16-byte path, 2050 and 12 the scalar one (bf16);
// E = 8, 64, 200 use 1, 4 and 8 columns per thread; T = 1000 splits the weight gradient's sum.
using LogitsCase = std::tuple<int64_t, int64_t, int64_t, DType>;

class CudaRouterLogitsTest : public ::testing::TestWithParam<LogitsCase> {};

TEST_P(CudaRouterLogitsTest, ForwardAndBackwardMatchTheCpu) {
  MF_REQUIRE_GPU();
  const auto [tokens, hidden, experts, dt] = GetParam();
  const Tensor x = RoundedTo(RandomNormal({tokens, hidden}, 21), dt);
  const Tensor w = RandomNormal({experts, hidden}, 22, 0.05f);
  Tensor logits = Tensor::Zeros({tokens, experts}, DType::kF32);
  RouterLogitsForward(x, w, &logits, CpuStream());
  const Tensor x_gpu = ToGpu(x, dt), w_gpu = w.To(Gpu());
  Tensor logits_gpu = Poisoned({tokens, experts}, DType::kF32);
  RouterLogitsForward(x_gpu, w_gpu, &logits_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(logits_gpu, logits, DType::kF32));  // same inputs, f32 math

  const Tensor d_logits = RandomNormal({tokens, experts}, 23);
  const Tensor d_x0 = RoundedTo(RandomNormal({tokens, hidden}, 24), dt);
  const Tensor d_w0 = RandomNormal({experts, hidden}, 25);
  Tensor d_x = d_x0.To(dt), d_w = d_w0.Clone();
  RouterLogitsBackward(x, w, d_logits, &d_x, &d_w, CpuStream());
  Tensor d_x_gpu = ToGpu(d_x0, dt), d_w_gpu = d_w0.To(Gpu());
  RouterLogitsBackward(x_gpu, w_gpu, d_logits.To(Gpu()), &d_x_gpu, &d_w_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_x_gpu, d_x.To(DType::kF32), dt));
  EXPECT_TRUE(ParityNear(d_w_gpu, d_w, DType::kF32));

  // Deterministic: a second run gives the same bits.
  Tensor again = d_w0.To(Gpu());
  RouterLogitsBackward(x_gpu, w_gpu, d_logits.To(Gpu()), nullptr, &again, GpuStream());
  EXPECT_EQ(again.ToVector(), d_w_gpu.ToVector());
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaRouterLogitsTest,
    ::testing::Values(LogitsCase{300, 2048, 64, DType::kBF16},
                      LogitsCase{300, 2048, 64, DType::kF32}, LogitsCase{7, 2050, 8, DType::kBF16},
                      LogitsCase{7, 2050, 8, DType::kF32}, LogitsCase{1000, 256, 200, DType::kBF16},
                      LogitsCase{1, 12, 3, DType::kBF16}, LogitsCase{33, 64, 20, DType::kF32}),
    [](const ::testing::TestParamInfo<LogitsCase>& info) {
      return absl::StrCat("T", std::get<0>(info.param), "_H", std::get<1>(info.param), "_E",
                          std::get<2>(info.param), "_", DTypeName(std::get<3>(info.param)));
    });

struct RouterCase {
  std::string name;
  TopKOptions options;
  bool bias;
};

class CudaRouterTest : public ::testing::TestWithParam<RouterCase> {};

TEST_P(CudaRouterTest, TopKForwardAndBackward) {
  MF_REQUIRE_GPU();
  const RouterCase& c = GetParam();
  const int64_t tokens = 37, experts = 16;
  const int k = c.options.k;
  const Tensor logits = RandomNormal({tokens, experts}, 1, 2.0f);
  const Tensor bias = c.bias ? RandomNormal({experts}, 2, 0.1f) : Tensor();
  Tensor ids = Tensor::Zeros({tokens, k}, DType::kI32);
  Tensor weights = Tensor::Zeros({tokens, k}, DType::kF32);
  RouterTopKForward(logits, bias, c.options, &ids, &weights, CpuStream());
  const Tensor logits_gpu = logits.To(Gpu());
  Tensor ids_gpu = Poisoned({tokens, k}, DType::kI32),
         weights_gpu = Poisoned({tokens, k}, DType::kF32);
  RouterTopKForward(logits_gpu, c.bias ? bias.To(Gpu()) : Tensor(), c.options, &ids_gpu,
                    &weights_gpu, GpuStream());
  EXPECT_EQ(ids_gpu.ToVector(), ids.ToVector()) << "selection must be identical";
  EXPECT_TRUE(ParityNear(weights_gpu, weights, DType::kF32));

  const Tensor d_weights = RandomNormal({tokens, k}, 3);
  const Tensor d_logits0 = RandomNormal({tokens, experts}, 4);
  Tensor d_logits = d_logits0.Clone();
  RouterTopKBackward(logits, ids, weights, c.options, d_weights, &d_logits, CpuStream());
  Tensor d_logits_gpu = d_logits0.To(Gpu());
  RouterTopKBackward(logits_gpu, ids.To(Gpu()), weights.To(Gpu()), c.options, d_weights.To(Gpu()),
                     &d_logits_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_logits_gpu, d_logits, DType::kF32));
}

TopKOptions Options(int k, ScoreFunction score, bool normalize, float scaling = 1.0f,
                    int groups = 0, int group_topk = 0) {
  TopKOptions o;
  o.k = k;
  o.score = score;
  o.normalize = normalize;
  o.scaling_factor = scaling;
  o.num_groups = groups;
  o.group_topk = group_topk;
  return o;
}

INSTANTIATE_TEST_SUITE_P(
    Scores, CudaRouterTest,
    ::testing::Values(
        RouterCase{"softmax_post", Options(2, ScoreFunction::kSoftmaxPost, false), false},
        RouterCase{"softmax_pre", Options(4, ScoreFunction::kSoftmaxPre, false), false},
        RouterCase{"softmax_pre_norm", Options(4, ScoreFunction::kSoftmaxPre, true, 2.5f), false},
        RouterCase{"sigmoid_bias", Options(3, ScoreFunction::kSigmoid, true), true},
        RouterCase{"sigmoid_groups", Options(4, ScoreFunction::kSigmoid, true, 1.0f, 4, 2), true},
        RouterCase{"softmax_groups", Options(6, ScoreFunction::kSoftmaxPre, false, 1.0f, 8, 3),
                   false}),
    [](const ::testing::TestParamInfo<RouterCase>& info) { return info.param.name; });

TEST(CudaRouterLossTest, SoftmaxAuxLossAndZLoss) {
  MF_REQUIRE_GPU();
  const int64_t tokens = 41, experts = 8;
  const Tensor logits = RandomNormal({tokens, experts}, 5, 3.0f);
  const Tensor logits_gpu = logits.To(Gpu());
  Tensor probs = Tensor::Zeros(logits.shape(), DType::kF32);
  SoftmaxForward(logits, &probs, CpuStream());
  Tensor probs_gpu = Poisoned(logits.shape(), DType::kF32);
  SoftmaxForward(logits_gpu, &probs_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(probs_gpu, probs, DType::kF32));

  const Tensor d_probs = RandomNormal(logits.shape(), 6);
  const Tensor d0 = RandomNormal(logits.shape(), 7);
  Tensor d = d0.Clone(), d_gpu = d0.To(Gpu());
  SoftmaxBackward(probs, d_probs, &d, CpuStream());
  SoftmaxBackward(probs.To(Gpu()), d_probs.To(Gpu()), &d_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_gpu, d, DType::kF32));

  const Tensor counts = Tensor::FromVector({10, 3, 0, 7, 12, 20, 5, 25}, {experts});
  const Tensor probs_on_gpu = probs.To(Gpu()), counts_gpu = counts.To(Gpu());
  Tensor aux = Tensor::Zeros({1}, DType::kF32), aux_gpu = Tensor::Zeros({1}, DType::kF32, Gpu());
  AuxLossForward(probs, counts, 96, 2, 0.01f, &aux, CpuStream());
  AuxLossForward(probs_on_gpu, counts_gpu, 96, 2, 0.01f, &aux_gpu, GpuStream());
  const float aux_value = aux.ToVector()[0], aux_gpu_value = aux_gpu.ToVector()[0];
  EXPECT_NEAR(aux_gpu_value, aux_value, 1e-5 * std::fabs(aux_value));
  // Accumulated on the device: += the same value.
  Tensor sums = Tensor::FromVector({0.25f}, {1}).To(Gpu());
  AuxLossForward(probs_on_gpu, counts_gpu, 96, 2, 0.01f, &sums, GpuStream());
  EXPECT_EQ(sums.ToVector()[0], 0.25f + aux_gpu_value);
  d = d0.Clone();
  d_gpu = d0.To(Gpu());
  AuxLossBackward(probs, counts, 96, 2, 0.01f, 0.5f, &d, CpuStream());
  AuxLossBackward(probs_on_gpu, counts_gpu, 96, 2, 0.01f, 0.5f, &d_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_gpu, d, DType::kF32));

  Tensor z = Tensor::Zeros({1}, DType::kF32), z_sum = Tensor::Zeros({1}, DType::kF32, Gpu());
  ZLossForward(logits, 1e-3f, 96, &z, CpuStream());
  ZLossForward(logits_gpu, 1e-3f, 96, &z_sum, GpuStream());
  const float z_value = z.ToVector()[0], z_gpu = z_sum.ToVector()[0];
  EXPECT_NEAR(z_gpu, z_value, 1e-5 * std::fabs(z_value));
  ZLossForward(logits_gpu, 1e-3f, 96, &z_sum, GpuStream());
  EXPECT_EQ(z_sum.ToVector()[0], z_gpu + z_gpu);
  d = d0.Clone();
  d_gpu = d0.To(Gpu());
  ZLossBackward(logits, 1e-3f, 96, 2.0f, &d, CpuStream());
  ZLossBackward(logits_gpu, 1e-3f, 96, 2.0f, &d_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_gpu, d, DType::kF32));
}

TEST(CudaRouterTest, BalancedRoutingMatchesCpu) {
  MF_REQUIRE_GPU();
  const int64_t rows = 53, k = 8, experts = 64;
  Tensor ids = Tensor::Zeros({rows, k}, DType::kI32), weights = Tensor::Zeros({rows, k}, DType::kF32);
  BalancedRouting(1000, experts, &ids, &weights, CpuStream());
  Tensor ids_gpu = Poisoned({rows, k}, DType::kI32), weights_gpu = Poisoned({rows, k}, DType::kF32);
  BalancedRouting(1000, experts, &ids_gpu, &weights_gpu, GpuStream());
  EXPECT_EQ(ids_gpu.ToVector(), ids.ToVector());
  EXPECT_EQ(weights_gpu.ToVector(), weights.ToVector());
}

}  // namespace
}  // namespace moefold::ops
