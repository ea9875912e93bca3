// The FP8 token dispatch's routed-row quantisation (core/model/fp8_dispatch.h) under mpirun with 2
// ranks holding different tokens of one micro-batch (TP×CP): current casts every rank's rows with
// the scale of the whole micro-batch (the amax max-reduced over TP×CP) and sends its inverse with
// each row; delayed casts with the site's scale, sends none and records the permuted rows' amax
// in the site's slot; blockwise sends each row's 1×128 tile scales. Codes are checked byte for
// byte against the permuted rows cast on the host.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "core/model/fp8_dispatch.h"
#include "core/model/fp8_linear.h"
#include "core/model/moe_layer.h"
#include "gtest/gtest.h"
#include "ops/fp8.h"
#include "ops/moe.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

using ::moefold::testing::RandomNormal;

constexpr int64_t kTokens = 6, kHidden = 128;
constexpr int kTopK = 2;

struct Fixture {
  parallel::MpiCommunicator world = parallel::MpiCommunicator::World("tp-cp");
  ModelParallel mp;
  ParameterSet params;
  std::unique_ptr<MoeLayer> layer;
  std::unique_ptr<Fp8Training> fp8;
  StepContext ctx{&CpuStream()};

  explicit Fixture(Fp8Recipe recipe) {
    mp.tp_cp = &world;
    ModelSpec spec;
    spec.hidden = kHidden;
    spec.num_layers = 1;
    spec.moe_layer = {true};
    spec.moe.num_experts = 4;
    spec.moe.top_k = kTopK;
    spec.moe.expert_ffn = 128;
    spec.moe.topk.k = kTopK;
    layer = std::make_unique<MoeLayer>(spec, mp, "m", &params);
    params.Initialize(3);
    Fp8Options options;
    options.recipe = recipe;
    auto created = Fp8Training::Create(options, params, mp, nullptr, Device::Cpu());
    MF_CHECK(created.ok()) << created.status();
    fp8 = std::move(*created);
    ctx.fp8 = fp8.get();
  }
  const Parameter& GateUp() { return *params.Find("m.experts.gate_up_proj.weight"); }
  const Parameter& Down() { return *params.Find("m.experts.down_proj.weight"); }
};

// This rank's routed rows: rank r's values scaled by 1 + 3r, so the ranks' amaxes differ.
Tensor Routed(int rank) {
  std::vector<float> v = RandomNormal({kTokens, kHidden}, 40 + rank).ToVector();
  for (float& x : v) x *= 1.0f + 3.0f * static_cast<float>(rank);
  return Tensor::FromVector(v, {kTokens, kHidden});
}

Tensor Sorted() { return Tensor::FromVectorI32({3, 0, 11, 6, 9, 1, 4, 8, 2}, {9}); }

Tensor Permuted(const Tensor& routed) {
  Tensor p = Tensor::Empty({Sorted().numel(), kHidden}, DType::kF32);
  ops::PermuteTokens(routed, Sorted(), kTopK, &p, CpuStream());
  return p;
}

float MaxAbs(const Tensor& t) {
  float m = 0;
  for (float v : t.ToVector()) m = std::max(m, std::fabs(v));
  return m;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

TEST(Fp8DispatchRowsTest, CurrentCastsEveryRankWithTheMicroBatchScale) {
  Fixture f(Fp8Recipe::kCurrent);
  const Tensor routed = Routed(f.world.rank());
  auto rows = QuantizeRoutedRows(f.ctx, f.GateUp(), routed, Sorted(), kTopK);
  ASSERT_OK(rows);
  // The whole micro-batch's amax: every rank's routed rows (not only the permuted ones).
  float amax = 0;
  for (int r = 0; r < f.world.size(); ++r) amax = std::max(amax, MaxAbs(Routed(r)));
  const float s = ops::Fp8ScaleFromAmax(amax, 448.0f, false, 1.0f);
  ASSERT_EQ(rows->scales.shape(), (Shape{9, 1}));
  for (int64_t i = 0; i < 9; ++i) EXPECT_EQ(rows->scales.data<float>()[i], 1.0f / s) << i;
  Tensor want = Tensor::Empty({9, kHidden}, DType::kFp8E4M3);
  ops::CastTransposeAmax(Permuted(routed), Tensor::FromVector({s}, {1}), &want, nullptr, nullptr,
                         CpuStream());
  EXPECT_TRUE(SameBytes(rows->rows, want));
}

TEST(Fp8DispatchRowsTest, DelayedCastsWithTheSiteScaleAndRecordsThePermutedAmax) {
  Fixture f(Fp8Recipe::kDelayed);
  const Tensor routed = Routed(f.world.rank());
  auto rows = QuantizeRoutedRows(f.ctx, f.GateUp(), routed, Sorted(), kTopK);
  ASSERT_OK(rows);
  EXPECT_FALSE(rows->scales.defined());
  auto site = f.fp8->DispatchScaleOf(f.GateUp(), routed, /*gradient=*/false, CpuStream());
  ASSERT_OK(site);
  EXPECT_EQ(site->amax.data<float>()[0], MaxAbs(Permuted(routed)));  // this rank's, reduced later
  Tensor want = Tensor::Empty({9, kHidden}, DType::kFp8E4M3);
  ops::CastTransposeAmax(Permuted(routed), site->scale, &want, nullptr, nullptr, CpuStream());
  EXPECT_TRUE(SameBytes(rows->rows, want));
}

TEST(Fp8DispatchRowsTest, BlockwiseSendsEachRowsTileScales) {
  Fixture f(Fp8Recipe::kBlockwise);
  const Tensor routed = Routed(f.world.rank());
  auto rows = QuantizeRoutedRows(f.ctx, f.GateUp(), routed, Sorted(), kTopK);
  ASSERT_OK(rows);
  Tensor want = Tensor::Empty({9, kHidden}, DType::kFp8E4M3);
  Tensor want_s = Tensor::Empty({9, 1}, DType::kF32);
  ASSERT_OK(ops::QuantizeBlockwise(Permuted(routed), ops::kFp8ActivationTile, {}, &want, &want_s,
                                   CpuStream()));
  EXPECT_TRUE(SameBytes(rows->rows, want));
  EXPECT_TRUE(SameBytes(rows->scales, want_s));
}

// The combine's backward: the down projection's output-gradient rows (already in expert order)
// are cast to the gradient format at home, with the same per-recipe scales as the forward's rows.
TEST(Fp8CombineGradientTest, CurrentCastsWithTheMicroBatchGradientScale) {
  Fixture f(Fp8Recipe::kCurrent);
  const Tensor d_rows = Permuted(Routed(f.world.rank()));  // (9, H), different amax per rank
  auto rows = QuantizeCombineGradient(f.ctx, f.Down(), d_rows);
  ASSERT_OK(rows);
  float amax = 0;
  for (int r = 0; r < f.world.size(); ++r) amax = std::max(amax, MaxAbs(Permuted(Routed(r))));
  const float s = ops::Fp8ScaleFromAmax(amax, ops::Fp8Max(DType::kFp8E5M2), false, 1.0f);
  ASSERT_EQ(rows->scales.shape(), (Shape{9, 1}));
  for (int64_t i = 0; i < 9; ++i) EXPECT_EQ(rows->scales.data<float>()[i], 1.0f / s) << i;
  Tensor want = Tensor::Empty({9, kHidden}, DType::kFp8E5M2);
  ops::CastTransposeAmax(d_rows, Tensor::FromVector({s}, {1}), &want, nullptr, nullptr,
                         CpuStream());
  EXPECT_TRUE(SameBytes(rows->rows, want));
}

TEST(Fp8CombineGradientTest, DelayedCastsWithTheSiteGradientScaleAndRecordsTheAmax) {
  Fixture f(Fp8Recipe::kDelayed);
  const Tensor d_rows = Permuted(Routed(f.world.rank()));
  auto rows = QuantizeCombineGradient(f.ctx, f.Down(), d_rows);
  ASSERT_OK(rows);
  EXPECT_FALSE(rows->scales.defined());
  EXPECT_EQ(rows->rows.dtype(), DType::kFp8E5M2);
  auto site = f.fp8->DispatchScaleOf(f.Down(), d_rows, /*gradient=*/true, CpuStream());
  ASSERT_OK(site);
  EXPECT_EQ(site->amax.data<float>()[0], MaxAbs(d_rows));  // this rank's, reduced at the step end
  Tensor want = Tensor::Empty({9, kHidden}, DType::kFp8E5M2);
  ops::CastTransposeAmax(d_rows, site->scale, &want, nullptr, nullptr, CpuStream());
  EXPECT_TRUE(SameBytes(rows->rows, want));
}

TEST(Fp8CombineGradientTest, BlockwiseSendsEachRowsTileScales) {
  Fixture f(Fp8Recipe::kBlockwise);
  const Tensor d_rows = Permuted(Routed(f.world.rank()));
  auto rows = QuantizeCombineGradient(f.ctx, f.Down(), d_rows);
  ASSERT_OK(rows);
  Tensor want = Tensor::Empty({9, kHidden}, DType::kFp8E5M2);
  Tensor want_s = Tensor::Empty({9, 1}, DType::kF32);
  ASSERT_OK(ops::QuantizeBlockwise(d_rows, ops::kFp8ActivationTile, {}, &want, &want_s,
                                   CpuStream()));
  EXPECT_TRUE(SameBytes(rows->rows, want));
  EXPECT_TRUE(SameBytes(rows->scales, want_s));
}

// The down projection's backward on received gradient codes against the one on the bf16 rows:
// delayed gives the same bits (the codes are the rows' cast with the same scale, and d_yᵀ's are
// their transpose); current and blockwise multiply the same codes in the input gradient and
// re-quantise the dequantised rows for d_yᵀ, one more FP8 rounding in the weight gradient.
TEST(Fp8CombineGradientTest, DownBackwardOnCodesMatchesTheRows) {
  for (Fp8Recipe recipe : {Fp8Recipe::kDelayed, Fp8Recipe::kCurrent, Fp8Recipe::kBlockwise}) {
    Fixture f(recipe);
    const Parameter& down = f.Down();
    const int64_t experts = down.compute.dim(0), ffn = down.compute.dim(2);
    const std::vector<int64_t> counts = {4, 0, 3, 2};  // 9 rows over the 4 experts
    ASSERT_EQ(static_cast<int64_t>(counts.size()), experts);
    const Tensor x = RandomNormal({9, ffn}, 90);
    const Tensor d_y = Permuted(Routed(0));
    auto rows = QuantizeCombineGradient(f.ctx, down, d_y);
    ASSERT_OK(rows);
    Tensor dx_rows = Tensor::Zeros({9, ffn}, DType::kF32), dx_codes = dx_rows.Clone();
    Tensor dw_rows = Tensor::Zeros(down.compute.shape(), DType::kF32), dw_codes = dw_rows.Clone();
    ASSERT_OK(f.fp8->Backward(f.ctx, down, 0, x, down.compute, counts, d_y, &dx_rows, 0.0f,
                              &dw_rows));
    ASSERT_OK(f.fp8->BackwardGradCodes(f.ctx, down, 0, x, down.compute, counts, rows->rows,
                                       rows->scales, &dx_codes, 0.0f, &dw_codes));
    if (recipe != Fp8Recipe::kCurrent) {
      // Delayed and blockwise cast d_y's rows the same (site scale; row tiles) in the dgrad.
      EXPECT_EQ(dx_rows.ToVector(), dx_codes.ToVector()) << static_cast<int>(recipe);
    }
    if (recipe == Fp8Recipe::kDelayed) {
      EXPECT_EQ(dw_rows.ToVector(), dw_codes.ToVector());
      continue;
    }
    // Current's rows carry the whole tensor's amax, the expert GEMM's own cast a chunk's: the
    // same here (one chunk); both weight gradients within FP8 rounding of each other.
    const std::vector<float> a = dw_rows.ToVector(), b = dw_codes.ToVector();
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      diff += (a[i] - b[i]) * (a[i] - b[i]);
      norm += a[i] * a[i];
    }
    EXPECT_GT(norm, 0);
    EXPECT_LT(std::sqrt(diff / norm), 0.1) << static_cast<int>(recipe);
  }
}

}  // namespace
}  // namespace moefold::model
