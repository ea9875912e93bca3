// The FP8 all-gathers of sequence parallelism (core/model/fp8_gather.h) under mpirun with 2 TP
// ranks, each holding half of the tokens: the gathered codes must be byte for byte what casting
// the gathered bf16 tensor with the whole tensor's scale gives (current: the amax of every
// rank's rows; delayed: the site's scale, with this rank's amax recorded in its slot), the
// gradient's transposed codes what casting the padded transpose gives, and blockwise (whose
// weight gradient tiles run along the tokens, across ranks) keeps the bf16 gather.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "core/model/fp8_gather.h"
#include "core/model/fp8_linear.h"
#include "core/model/attention_layer.h"
#include "core/model/mlp_layer.h"
#include "core/model/rope_tables.h"
#include "gtest/gtest.h"
#include "ops/fp8.h"
#include "ops/fp8_gemm.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

using ::moefold::testing::RandomNormal;

constexpr int64_t kRows = 5, kHidden = 64, kFfn = 32;

struct Fixture {
  parallel::MpiCommunicator world = parallel::MpiCommunicator::World("tp");
  ModelParallel mp;
  ParameterSet params;
  std::unique_ptr<SwiGluMlp> mlp;
  std::unique_ptr<Fp8Training> fp8;
  StepContext ctx{&CpuStream()};

  explicit Fixture(Fp8Recipe recipe, bool sp_gather = true, DType grad_format = DType::kFp8E5M2) {
    mp.tp = &world;
    mp.tp_cp = &world;
    mp.sequence_parallel = true;
    ModelSpec spec;
    spec.hidden = kHidden;
    spec.num_layers = 1;
    mlp = std::make_unique<SwiGluMlp>(spec, mp, "m", kFfn, &params);
    params.Initialize(3);
    Fp8Options options;
    options.recipe = recipe;
    options.sp_gather = sp_gather;
    options.grad_format = grad_format;
    auto created = Fp8Training::Create(options, params, mp, nullptr, Device::Cpu());
    MF_CHECK(created.ok()) << created.status();
    fp8 = std::move(*created);
    ctx.fp8 = fp8.get();
  }
  const Parameter& GateUp() { return *params.Find("m.gate_up_proj.weight"); }
  const Parameter& Down() { return *params.Find("m.down_proj.weight"); }
  // An attention layer (4 heads of 16 over 2 KV heads) in the same parameter set, made before
  // the FP8 state so that its projections are sites too.
  static ModelSpec AttentionSpec() {
    ModelSpec spec;
    spec.hidden = kHidden;
    spec.num_layers = 1;
    spec.num_heads = 4;
    spec.num_kv_heads = 2;
    spec.head_dim = 16;
    return spec;
  }
};

// A micro-batch of 2 sequences of kRows tokens: 2·kRows rows, kRows on each of the 2 TP ranks.
MicroBatch Batch() {
  MicroBatch batch;
  batch.tokens = Tensor::Zeros({2, kRows}, DType::kI32);
  batch.targets = Tensor::Zeros({2, kRows}, DType::kI32);
  batch.positions = Tensor::Empty({kRows}, DType::kI32);
  for (int64_t i = 0; i < kRows; ++i) batch.positions.data<int32_t>()[i] = static_cast<int32_t>(i);
  return WithDeviceCopies(batch, CpuStream());
}

// Rank r's rows, scaled by 1 + 3r so that the ranks' amaxes differ.
Tensor Rows(int rank, int64_t width) {
  std::vector<float> v = RandomNormal({kRows, width}, 70 + rank).ToVector();
  for (float& x : v) x *= 1.0f + 3.0f * static_cast<float>(rank);
  return Tensor::FromVector(v, {kRows, width});
}

// Every rank's rows in rank order: what the bf16 gather makes.
Tensor Whole(int ranks, int64_t width) {
  std::vector<float> v;
  for (int r = 0; r < ranks; ++r) {
    const std::vector<float> part = Rows(r, width).ToVector();
    v.insert(v.end(), part.begin(), part.end());
  }
  return Tensor::FromVector(v, {ranks * kRows, width});
}

float MaxAbs(const Tensor& t) {
  float m = 0;
  for (float v : t.ToVector()) m = std::max(m, std::fabs(v));
  return m;
}

Tensor Cast(const Tensor& x, float scale, DType format) {
  Tensor q = Tensor::Empty(x.shape(), format);
  ops::CastTransposeAmax(x, Tensor::FromVector({scale}, {1}), &q, nullptr, nullptr, CpuStream());
  return q;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

TEST(Fp8GatherTest, CurrentGathersTheCodesOfTheWholeInput) {
  Fixture f(Fp8Recipe::kCurrent);
  ASSERT_TRUE(GathersFp8(f.ctx, f.mp, f.GateUp()));
  Tensor full, scale_inv;
  ASSERT_OK(GatherProjectionInput(f.ctx, f.mp, f.GateUp(), Rows(f.world.rank(), kHidden), nullptr,
                                  &full, &scale_inv));
  const Tensor whole = Whole(f.world.size(), kHidden);
  const float s = ops::Fp8ScaleFromAmax(MaxAbs(whole), 448.0f, false, 1.0f);
  ASSERT_TRUE(scale_inv.defined());
  EXPECT_EQ(scale_inv.data<float>()[0], 1.0f / s);
  EXPECT_TRUE(SameBytes(full, Cast(whole, s, DType::kFp8E4M3)));
  Fp8Operand storage;
  const Fp8Operand* op = InputOperand(full, scale_inv, &storage);
  ASSERT_NE(op, nullptr);
  EXPECT_EQ(op->codes.raw_data(), full.raw_data());
}

TEST(Fp8GatherTest, DelayedCastsWithTheSiteScaleAndRecordsThisRanksAmax) {
  Fixture f(Fp8Recipe::kDelayed);
  const Tensor rows = Rows(f.world.rank(), kHidden);
  Tensor full, scale_inv;
  ASSERT_OK(GatherProjectionInput(f.ctx, f.mp, f.GateUp(), rows, nullptr, &full, &scale_inv));
  // A fresh history: scale 1, and this rank's amax in the input's slot (the stage's max at the
  // step's end completes it).
  EXPECT_EQ(scale_inv.data<float>()[0], 1.0f);
  EXPECT_TRUE(SameBytes(full, Cast(Whole(f.world.size(), kHidden), 1.0f, DType::kFp8E4M3)));
  auto q = f.fp8->QuantizeRowsForGather(f.GateUp(), rows, false, CpuStream());
  ASSERT_OK(q);
  EXPECT_TRUE(SameBytes(q->codes, Cast(rows, 1.0f, DType::kFp8E4M3)));
}

TEST(Fp8GatherTest, GradientGatherBringsCodesAndTheirPaddedTranspose) {
  for (DType format : {DType::kFp8E5M2, DType::kFp8E4M3}) {
    Fixture f(Fp8Recipe::kCurrent, true, format);
    Tensor d_y_full;
    Fp8Operand d_y_fp8;
    auto quantized = GatherProjectionGrad(f.ctx, f.mp, f.Down(), Rows(f.world.rank(), kHidden),
                                          &d_y_full, &d_y_fp8);
    ASSERT_OK(quantized);
    ASSERT_TRUE(*quantized);
    EXPECT_FALSE(d_y_full.defined());
    const Tensor whole = Whole(f.world.size(), kHidden);
    const float s = ops::Fp8ScaleFromAmax(MaxAbs(whole), ops::Fp8Max(format), false, 1.0f);
    EXPECT_EQ(d_y_fp8.scale_inv.data<float>()[0], 1.0f / s);
    EXPECT_TRUE(SameBytes(d_y_fp8.codes, Cast(whole, s, format))) << DTypeName(format);
    // (N, T rounded up to 128), zero columns past T.
    Tensor padded = Tensor::Empty({kHidden, 128}, DType::kF32);
    ops::TransposePad(whole, &padded, CpuStream());
    EXPECT_TRUE(SameBytes(d_y_fp8.codes_t, Cast(padded, s, format))) << DTypeName(format);
  }
}

TEST(Fp8GatherTest, OffOrBlockwiseGathersTheActivationDtype) {
  for (auto [recipe, sp_gather] :
       {std::pair{Fp8Recipe::kDelayed, false}, std::pair{Fp8Recipe::kBlockwise, true}}) {
    Fixture f(recipe, sp_gather);
    EXPECT_FALSE(GathersFp8(f.ctx, f.mp, f.GateUp()));
    Tensor full, scale_inv;
    ASSERT_OK(GatherProjectionInput(f.ctx, f.mp, f.GateUp(), Rows(f.world.rank(), kHidden),
                                    nullptr, &full, &scale_inv));
    EXPECT_FALSE(scale_inv.defined());
    EXPECT_TRUE(SameBytes(full, Whole(f.world.size(), kHidden)));
    Tensor d_y_full;
    Fp8Operand d_y_fp8;
    auto quantized = GatherProjectionGrad(f.ctx, f.mp, f.Down(), Rows(f.world.rank(), kHidden),
                                          &d_y_full, &d_y_fp8);
    ASSERT_OK(quantized);
    EXPECT_FALSE(*quantized);
    EXPECT_TRUE(SameBytes(d_y_full, Whole(f.world.size(), kHidden)));
  }
}

// The layer under the gather: the FP8 MLP's forward and backward give the same bits with the
// gather on and off (the codes reaching each GEMM are the same).
TEST(Fp8GatherTest, MlpForwardAndBackwardAreTheSameBitsEitherWay) {
  for (Fp8Recipe recipe : {Fp8Recipe::kDelayed, Fp8Recipe::kCurrent}) {
    std::vector<float> y[2], d_x[2], d_gate_up[2], d_down[2];
    for (int on = 0; on < 2; ++on) {
      Fixture f(recipe, on == 1);
      const Tensor x = Rows(f.world.rank(), kHidden);
      SwiGluMlp::Saved saved;
      Tensor out;
      ASSERT_OK(f.mlp->Forward(f.ctx, x, &saved, &out));
      EXPECT_EQ(saved.x.dtype(), on == 1 ? DType::kFp8E4M3 : DType::kF32);
      Tensor dx;
      ASSERT_OK(f.mlp->Backward(f.ctx, saved, Rows(1 - f.world.rank(), kHidden), &dx));
      y[on] = out.ToVector();
      d_x[on] = dx.ToVector();
      d_gate_up[on] = f.GateUp().grad.ToVector();
      d_down[on] = f.Down().grad.ToVector();
    }
    EXPECT_EQ(y[0], y[1]);
    EXPECT_EQ(d_x[0], d_x[1]);
    EXPECT_EQ(d_gate_up[0], d_gate_up[1]);
    EXPECT_EQ(d_down[0], d_down[1]);
  }
}

// The same for the attention layer: qkv's input gathered as codes (and saved as codes for the
// weight gradient), o_proj's output gradient gathered as codes.
TEST(Fp8GatherTest, AttentionForwardAndBackwardAreTheSameBitsEitherWay) {
  for (Fp8Recipe recipe : {Fp8Recipe::kDelayed, Fp8Recipe::kCurrent}) {
    std::vector<float> y[2], d_x[2], d_qkv[2], d_o[2];
    for (int on = 0; on < 2; ++on) {
      parallel::MpiCommunicator world = parallel::MpiCommunicator::World("tp");
      ModelParallel mp;
      mp.tp = &world;
      mp.tp_cp = &world;
      mp.sequence_parallel = true;
      ParameterSet params;
      RopeTables rope(16, 10000.0f);
      AttentionLayer layer(Fixture::AttentionSpec(), mp, "a", &params, &rope);
      params.Initialize(5);
      Fp8Options options;
      options.recipe = recipe;
      options.sp_gather = on == 1;
      auto fp8 = Fp8Training::Create(options, params, mp, nullptr, Device::Cpu());
      ASSERT_OK(fp8);
      StepContext ctx{&CpuStream()};
      ctx.fp8 = fp8->get();
      const MicroBatch batch = Batch();
      AttentionLayer::Saved saved;
      Tensor out;
      ASSERT_OK(layer.Forward(ctx, batch, Rows(world.rank(), kHidden), &saved, &out));
      EXPECT_EQ(saved.x_full.dtype(), on == 1 ? DType::kFp8E4M3 : DType::kF32);
      EXPECT_EQ(saved.x_full_scale_inv.defined(), on == 1);
      Tensor dx = Tensor::Zeros({kRows, kHidden}, DType::kF32);
      ASSERT_OK(layer.Backward(ctx, batch, saved, Rows(1 - world.rank(), kHidden), &dx));
      y[on] = out.ToVector();
      d_x[on] = dx.ToVector();
      d_qkv[on] = params.Find("a.self_attn.qkv_proj.weight")->grad.ToVector();
      d_o[on] = params.Find("a.self_attn.o_proj.weight")->grad.ToVector();
    }
    EXPECT_EQ(y[0], y[1]);
    EXPECT_EQ(d_x[0], d_x[1]);
    EXPECT_EQ(d_qkv[0], d_qkv[1]);
    EXPECT_EQ(d_o[0], d_o[1]);
  }
}

}  // namespace
}  // namespace moefold::model
