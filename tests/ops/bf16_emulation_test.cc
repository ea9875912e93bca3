// The CPU ops with bf16 tensors (emulation: widen, f32 reference, round back): each result equals
// the f32 reference on the same bf16-rounded inputs, rounded once to bf16 (or, where the op sums
// rounded pieces, within bf16 tolerance); accumulating outputs keep their contents; and the dtype
// rules of the CUDA launchers are refused with the op's name.
#include <cmath>

#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/grouped_gemm.h"
#include "ops/loss.h"
#include "ops/moe.h"
#include "ops/norm.h"
#include "ops/reduce.h"
#include "ops/rope.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::ParityNear;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;

constexpr DType kBf16 = DType::kBF16;

// An f32 tensor whose values are exactly representable in bf16.
Tensor Bf16Values(const Shape& shape, uint64_t seed, float stddev = 1.0f) {
  return RoundedTo(RandomNormal(shape, seed, stddev), kBf16);
}
Tensor AsBf16(const Tensor& t) { return t.To(kBf16); }
Tensor EmptyBf16(const Shape& shape) { return Tensor::Empty(shape, kBf16); }

// `actual` (bf16) holds exactly the f32 `reference` rounded to bf16.
::testing::AssertionResult IsRounded(const Tensor& actual, const Tensor& reference) {
  if (actual.dtype() != kBf16) return ::testing::AssertionFailure() << actual.DebugString();
  return ::moefold::testing::TensorNear(actual.To(DType::kF32), RoundedTo(reference, kBf16), 0, 0);
}

TEST(Bf16EmulationTest, GemmRoundsOnceAndAccumulatesIntoEitherDtype) {
  const Tensor a = Bf16Values({5, 7}, 1), b = Bf16Values({4, 7}, 2), c0 = Bf16Values({5, 4}, 3);
  Tensor want = c0.Clone();
  Gemm(a, false, b, true, 0.5f, 1.0f, &want, CpuStream());
  Tensor c_bf16 = AsBf16(c0);
  Gemm(AsBf16(a), false, AsBf16(b), true, 0.5f, 1.0f, &c_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(c_bf16, want));
  // bf16 inputs, an f32 output: weight gradients accumulate in f32 without rounding.
  Tensor c_f32 = c0.Clone();
  Gemm(AsBf16(a), false, AsBf16(b), true, 0.5f, 1.0f, &c_f32, CpuStream());
  EXPECT_TENSOR_NEAR(c_f32, want, 0, 0);

  const Tensor bias = Bf16Values({4}, 4);
  Tensor y = Tensor::Empty({5, 4}, DType::kF32), y_bf16 = EmptyBf16({5, 4});
  LinearBiasForward(a, b, bias, &y, CpuStream());
  LinearBiasForward(AsBf16(a), AsBf16(b), AsBf16(bias), &y_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(y_bf16, y));
}

TEST(Bf16EmulationTest, GroupedLinearPerExpert) {
  const Tensor x = Bf16Values({9, 6}, 5), w = Bf16Values({3, 4, 6}, 6);
  const Tensor counts = Tensor::FromVectorI32({4, 0, 5}, {3});
  Tensor y = Tensor::Empty({9, 4}, DType::kF32), y_bf16 = EmptyBf16({9, 4});
  GroupedLinearForward(x, w, counts, &y, CpuStream());
  GroupedLinearForward(AsBf16(x), AsBf16(w), counts, &y_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(y_bf16, y));

  const Tensor d_y = Bf16Values({9, 4}, 7), d_w0 = RandomNormal({3, 4, 6}, 8);
  Tensor d_x = Tensor::Empty({9, 6}, DType::kF32), d_w = d_w0.Clone();
  GroupedLinearBackward(x, w, counts, d_y, &d_x, &d_w, CpuStream());
  Tensor d_x_bf16 = EmptyBf16({9, 6}), d_w_f32 = d_w0.Clone();
  GroupedLinearBackward(AsBf16(x), AsBf16(w), counts, AsBf16(d_y), &d_x_bf16, &d_w_f32,
                        CpuStream());
  EXPECT_TRUE(IsRounded(d_x_bf16, d_x));
  EXPECT_TENSOR_NEAR(d_w_f32, d_w, 0, 0);
}

TEST(Bf16EmulationTest, NormsRopeSwiGluAndElementwise) {
  const Tensor x = Bf16Values({6, 16}, 9), w = Bf16Values({16}, 10), r = Bf16Values({6, 16}, 11);
  Tensor y = Tensor::Empty(x.shape(), DType::kF32), rstd = Tensor::Empty({6}, DType::kF32);
  RmsNormForward(x, w, 1e-5f, &y, &rstd, CpuStream());
  Tensor y_bf16 = EmptyBf16(x.shape()), rstd_bf16 = Tensor::Empty({6}, DType::kF32);
  RmsNormForward(AsBf16(x), AsBf16(w), 1e-5f, &y_bf16, &rstd_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(y_bf16, y));
  EXPECT_TENSOR_NEAR(rstd_bf16, rstd, 0, 0);

  const Tensor d_y = Bf16Values(x.shape(), 12);
  Tensor d_x = Tensor::Empty(x.shape(), DType::kF32), d_w = Tensor::Zeros({16}, DType::kF32);
  RmsNormBackward(x, w, rstd, d_y, &d_x, &d_w, CpuStream());
  Tensor d_x_bf16 = EmptyBf16(x.shape()), d_w_f32 = Tensor::Zeros({16}, DType::kF32);
  RmsNormBackward(AsBf16(x), AsBf16(w), rstd, AsBf16(d_y), &d_x_bf16, &d_w_f32, CpuStream());
  EXPECT_TRUE(IsRounded(d_x_bf16, d_x));
  EXPECT_TENSOR_NEAR(d_w_f32, d_w, 0, 0);

  // The fused residual add stores the sum in bf16 and normalises the stored value (as the GPU).
  Tensor sum_bf16 = EmptyBf16(x.shape()), fused = EmptyBf16(x.shape());
  AddRmsNormForward(AsBf16(x), AsBf16(r), AsBf16(w), 1e-5f, &sum_bf16, &fused, &rstd_bf16,
                    CpuStream());
  Tensor sum = Tensor::Empty(x.shape(), DType::kF32);
  Add(x, r, &sum, CpuStream());
  EXPECT_TRUE(IsRounded(sum_bf16, sum));
  const Tensor stored_sum = RoundedTo(sum, kBf16);
  RmsNormForward(stored_sum, w, 1e-5f, &y, &rstd, CpuStream());
  EXPECT_TRUE(IsRounded(fused, y));

  const Tensor positions = Tensor::FromVectorI32({0, 1, 2, 7, 8, 100}, {6});
  const Tensor table = RopeTable(101, 8, 10000.0f);
  const Tensor x3 = x.Reshape({6, 2, 8});
  Tensor rot = Tensor::Empty(x3.shape(), DType::kF32);
  RopeForward(x3, positions, table, &rot, CpuStream());
  Tensor rot_bf16 = AsBf16(x3);
  RopeForward(rot_bf16, positions, table, &rot_bf16, CpuStream());  // in place
  EXPECT_TRUE(IsRounded(rot_bf16, rot));

  // x as the fused gate_up (6, 2·8).
  Tensor act = Tensor::Empty({6, 8}, DType::kF32), act_bf16 = EmptyBf16({6, 8});
  SwiGluForward(x, &act, CpuStream());
  SwiGluForward(AsBf16(x), &act_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(act_bf16, act));

  // Scale in place.
  Tensor scaled = r.Clone(), scaled_bf16 = AsBf16(r);
  Scale(3.0f, &scaled, CpuStream());
  Scale(3.0f, &scaled_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(scaled_bf16, scaled));
  EXPECT_DOUBLE_EQ(SumOfSquares(AsBf16(x), CpuStream()), SumOfSquares(x, CpuStream()));
}

TEST(Bf16EmulationTest, EmbeddingAttentionPermutationAndLoss) {
  const Tensor table = Bf16Values({10, 8}, 13), ids = RandomInts({7}, 14, 10);
  Tensor rows = Tensor::Empty({7, 8}, DType::kF32), rows_bf16 = EmptyBf16({7, 8});
  EmbeddingForward(ids, table, &rows, CpuStream());
  EmbeddingForward(ids, AsBf16(table), &rows_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(rows_bf16, rows));
  const Tensor d_rows = Bf16Values({7, 8}, 15);
  Tensor d_table = Tensor::Zeros({10, 8}, DType::kF32), d_table2 = d_table.Clone();
  EmbeddingBackward(ids, d_rows, &d_table, CpuStream());
  EmbeddingBackward(ids, AsBf16(d_rows), &d_table2, CpuStream());
  EXPECT_TENSOR_NEAR(d_table2, d_table, 0, 0);

  const Tensor q = Bf16Values({2, 5, 4, 8}, 16), k = Bf16Values({2, 5, 2, 8}, 17);
  const Tensor v = Bf16Values({2, 5, 2, 8}, 18);
  Tensor out = Tensor::Empty(q.shape(), DType::kF32), lse = Tensor::Empty({2, 4, 5}, DType::kF32);
  AttentionForward(q, k, v, 0.3f, &out, &lse, CpuStream());
  Tensor out_bf16 = EmptyBf16(q.shape()), lse2 = Tensor::Empty({2, 4, 5}, DType::kF32);
  AttentionForward(AsBf16(q), AsBf16(k), AsBf16(v), 0.3f, &out_bf16, &lse2, CpuStream());
  EXPECT_TRUE(IsRounded(out_bf16, out));
  EXPECT_TENSOR_NEAR(lse2, lse, 0, 0);
  // Backward reads the stored (rounded) output, so it is compared within bf16 tolerance.
  const Tensor d_out = Bf16Values(q.shape(), 19);
  Tensor d_q = Tensor::Empty(q.shape(), DType::kF32), d_k = Tensor::Empty(k.shape(), DType::kF32);
  Tensor d_v = Tensor::Empty(v.shape(), DType::kF32);
  AttentionBackward(q, k, v, out, lse, d_out, 0.3f, &d_q, &d_k, &d_v, CpuStream());
  Tensor d_q2 = EmptyBf16(q.shape()), d_k2 = EmptyBf16(k.shape()), d_v2 = EmptyBf16(v.shape());
  AttentionBackward(AsBf16(q), AsBf16(k), AsBf16(v), out_bf16, lse, AsBf16(d_out), 0.3f, &d_q2,
                    &d_k2, &d_v2, CpuStream());
  EXPECT_TRUE(ParityNear(d_q2, d_q, kBf16));
  EXPECT_TRUE(ParityNear(d_k2, d_k, kBf16));
  EXPECT_TRUE(ParityNear(d_v2, d_v, kBf16));

  const Tensor x = Bf16Values({4, 8}, 20), sorted = Tensor::FromVectorI32({1, 4, 0, 6, 3, 2}, {6});
  Tensor permuted = Tensor::Empty({6, 8}, DType::kF32), permuted_bf16 = EmptyBf16({6, 8});
  PermuteTokens(x, sorted, 2, &permuted, CpuStream());
  PermuteTokens(AsBf16(x), sorted, 2, &permuted_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(permuted_bf16, permuted));
  const Tensor weights = RandomNormal({4, 2}, 21);
  Tensor combined = Tensor::Empty({4, 8}, DType::kF32), combined_bf16 = EmptyBf16({4, 8});
  UnpermuteTokens(permuted, sorted, weights, &combined, CpuStream());
  UnpermuteTokens(permuted_bf16, sorted, weights, &combined_bf16, CpuStream());
  EXPECT_TRUE(IsRounded(combined_bf16, combined));
  Tensor d_p = Tensor::Empty({6, 8}, DType::kF32), d_w = Tensor::Empty({4, 2}, DType::kF32);
  Tensor d_p2 = EmptyBf16({6, 8}), d_w2 = Tensor::Empty({4, 2}, DType::kF32);
  UnpermuteTokensBackward(x, permuted, sorted, weights, &d_p, &d_w, CpuStream());
  UnpermuteTokensBackward(AsBf16(x), permuted_bf16, sorted, weights, &d_p2, &d_w2, CpuStream());
  EXPECT_TRUE(IsRounded(d_p2, d_p));
  EXPECT_TENSOR_NEAR(d_w2, d_w, 0, 0);
  Tensor d_x = Tensor::Empty({4, 8}, DType::kF32), d_x2 = EmptyBf16({4, 8});
  PermuteTokensBackward(permuted, sorted, 2, &d_x, CpuStream());
  PermuteTokensBackward(permuted_bf16, sorted, 2, &d_x2, CpuStream());
  EXPECT_TRUE(IsRounded(d_x2, d_x));

  const Tensor logits = Bf16Values({5, 11}, 22, 3.0f);
  const Tensor targets = Tensor::FromVectorI32({3, -1, 0, 10, 5}, {5});
  Tensor losses = Tensor::Empty({5}, DType::kF32), row_lse = Tensor::Empty({5}, DType::kF32);
  CrossEntropyForward(logits, targets, &losses, &row_lse, CpuStream());
  Tensor losses2 = Tensor::Empty({5}, DType::kF32), row_lse2 = Tensor::Empty({5}, DType::kF32);
  CrossEntropyForward(AsBf16(logits), targets, &losses2, &row_lse2, CpuStream());
  EXPECT_TENSOR_NEAR(losses2, losses, 0, 0);
  const Tensor d_losses = RandomNormal({5}, 23);
  Tensor d_logits = Tensor::Empty(logits.shape(), DType::kF32);
  CrossEntropyBackward(logits, targets, row_lse, d_losses, &d_logits, CpuStream());
  Tensor in_place = AsBf16(logits);  // d_logits may alias logits
  CrossEntropyBackward(in_place, targets, row_lse, d_losses, &in_place, CpuStream());
  EXPECT_TRUE(IsRounded(in_place, d_logits));
}

TEST(Bf16EmulationDeathTest, RefusesWhatTheGpuRefuses) {
  const Tensor a = Tensor::Zeros({2, 2}, kBf16), b = Tensor::Zeros({2, 2}, DType::kF32);
  Tensor c = Tensor::Zeros({2, 2}, DType::kF32), c16 = Tensor::Zeros({2, 2}, DType::kF16);
  EXPECT_DEATH(Gemm(a, false, b, false, 1.0f, 0.0f, &c, CpuStream()), "Gemm: b .*dtype of a");
  EXPECT_DEATH(Gemm(a, false, a, false, 1.0f, 0.0f, &c16, CpuStream()),
               "Gemm: c must be f32 or bf16");
  EXPECT_DEATH(Add(a, b, &c, CpuStream()), "Add: b");
  Tensor rstd = Tensor::Zeros({2}, kBf16), y = Tensor::Zeros({2, 2}, kBf16);
  const Tensor w = Tensor::Zeros({2}, kBf16);
  EXPECT_DEATH(RmsNormForward(a, w, 1e-5f, &y, &rstd, CpuStream()),
               "RmsNormForward: rstd must be f32");
}

}  // namespace
}  // namespace moefold::ops
