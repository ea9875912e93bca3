// Tests of RoPE: identity at position 0, hand-computed rotations (long positions included), bf16
// rounded once, norm preservation per pair, the inverse, in-place use, and a finite-difference
// check of the backward; the (cos, sin) table, and the fused QKV split with RoPE.
#include "ops/rope.h"

#include <algorithm>
#include <cmath>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;

constexpr float kTheta = 10000.0f;

TEST(RopeTest, PositionZeroIsIdentity) {
  const Tensor x = RandomNormal({3, 2, 8}, 1);
  const Tensor pos = Tensor::FromVectorI32({0, 0, 0}, {3});
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, RopeTable(1, 8, kTheta), &y, CpuStream());
  EXPECT_TENSOR_NEAR(y, x, 0, 0);
}

TEST(RopeTest, HandValueRotateHalfLayout) {
  // D = 4: element 0 pairs with 2 (angle pos·1), element 1 with 3 (angle pos·theta^(-1/2) =
  // pos/100).
  const Tensor x = Tensor::FromVector({1, 1, 0, 0}, {1, 1, 4});
  const Tensor pos = Tensor::FromVectorI32({3}, {1});
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, RopeTable(4, 4, kTheta), &y, CpuStream());
  const Tensor expected = Tensor::FromVector(
      {std::cos(3.0f), std::cos(0.03f), std::sin(3.0f), std::sin(0.03f)}, {1, 1, 4});
  EXPECT_TENSOR_NEAR(y, expected, 1e-6, 1e-7);
}

// x (T, N, D) rotated by hand in f64 by sign · pos · theta^(−2i/D), no table involved.
Tensor RotatedByHand(const Tensor& x, const Tensor& positions, double theta, double sign) {
  const int64_t rows = x.dim(0), heads = x.dim(1), dim = x.dim(2), half = dim / 2;
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  for (int64_t t = 0; t < rows; ++t) {
    const double pos = positions.data<int32_t>()[t];
    for (int64_t n = 0; n < heads; ++n) {
      const float* a = x.data<float>() + (t * heads + n) * dim;
      float* b = y.data<float>() + (t * heads + n) * dim;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = pos * std::pow(theta, -2.0 * i / dim);
        const double c = std::cos(angle), s = sign * std::sin(angle);
        b[i] = static_cast<float>(a[i] * c - a[i + half] * s);
        b[i + half] = static_cast<float>(a[i + half] * c + a[i] * s);
      }
    }
  }
  return y;
}

TEST(RopeTest, LongPositionsMatchTheRotationByHand) {
  // Long positions: the table's f64 angles keep the factors within f32 rounding of the exact ones.
  const Tensor x = RandomNormal({5, 3, 16}, 7);
  const Tensor pos = Tensor::FromVectorI32({0, 1, 4095, 65535, 31}, {5});
  const Tensor table = RopeTable(65536, 16, 500000.0f);
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, table, &y, CpuStream());
  EXPECT_TENSOR_NEAR(y, RotatedByHand(x, pos, 500000.0, 1.0), 1e-5, 1e-6);
  Tensor in_place = x.Clone();
  RopeBackward(in_place, pos, table, &in_place, CpuStream());
  EXPECT_TENSOR_NEAR(in_place, RotatedByHand(x, pos, 500000.0, -1.0), 1e-5, 1e-6);
}

TEST(RopeTest, Bf16RoundsTheF32ResultOnce) {
  const Tensor x = RandomNormal({5, 3, 16}, 8).To(DType::kBF16);
  const Tensor pos = Tensor::FromVectorI32({0, 9, 4095, 100, 31}, {5});
  const Tensor table = RopeTable(4096, 16, kTheta);
  const Tensor x_f32 = x.To(DType::kF32);
  Tensor y = Tensor::Zeros(x.shape(), DType::kBF16), y_f32 = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, table, &y, CpuStream());
  RopeForward(x_f32, pos, table, &y_f32, CpuStream());
  EXPECT_EQ(y.ToVector(), y_f32.To(DType::kBF16).ToVector());
  Tensor in_place = x.Clone();
  RopeBackward(in_place, pos, table, &in_place, CpuStream());
  RopeBackward(x_f32, pos, table, &y_f32, CpuStream());
  EXPECT_EQ(in_place.ToVector(), y_f32.To(DType::kBF16).ToVector());
}

TEST(RopeTest, PreservesPairNormsAndBackwardInvertsForward) {
  const int64_t t = 4, n = 3, d = 6;
  const Tensor x = RandomNormal({t, n, d}, 2);
  const Tensor pos = RandomInts({t}, 3, 4096);
  const Tensor table = RopeTable(4096, d, kTheta);
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, table, &y, CpuStream());
  for (int64_t r = 0; r < t * n; ++r) {
    for (int64_t i = 0; i < d / 2; ++i) {
      const float* a = x.data<float>() + r * d;
      const float* b = y.data<float>() + r * d;
      EXPECT_NEAR(std::hypot(a[i], a[i + d / 2]), std::hypot(b[i], b[i + d / 2]), 1e-5);
    }
  }
  Tensor back = y.Clone();
  RopeBackward(back, pos, table, &back, CpuStream());  // in place: d_x aliases d_y
  EXPECT_TENSOR_NEAR(back, x, 1e-5, 1e-6);
}

TEST(RopeTest, InPlaceForwardMatchesOutOfPlace) {
  const Tensor x = RandomNormal({2, 2, 4}, 4);
  const Tensor pos = Tensor::FromVectorI32({5, 17}, {2});
  const Tensor table = RopeTable(32, 4, kTheta);
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  RopeForward(x, pos, table, &y, CpuStream());
  Tensor z = x.Clone();
  RopeForward(z, pos, table, &z, CpuStream());
  EXPECT_TENSOR_NEAR(z, y, 0, 0);
}

TEST(RopeTest, BackwardMatchesFiniteDifferences) {
  Tensor x = RandomNormal({3, 2, 4}, 5);
  const Tensor pos = Tensor::FromVectorI32({0, 7, 300}, {3});
  const Tensor table = RopeTable(301, 4, kTheta);
  const Tensor cot = RandomNormal(x.shape(), 6);
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  auto loss = [&] {
    RopeForward(x, pos, table, &y, CpuStream());
    return Dot(y, cot);
  };
  Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32);
  RopeBackward(cot, pos, table, &d_x, CpuStream());
  EXPECT_TRUE(GradientMatches(d_x, loss, &x));
}

TEST(RopeTableTest, HandValues) {
  // D = 4: pair 0 turns by pos·1, pair 1 by pos·theta^(-1/2) = pos/100; f64, rounded once.
  const Tensor table = RopeTable(3, 4, kTheta);
  ASSERT_EQ(table.shape(), (Shape{3, 2, 2}));
  const float* t = table.data<float>();
  for (int p = 0; p < 3; ++p) {
    EXPECT_EQ(t[p * 4 + 0], static_cast<float>(std::cos(p * 1.0)));
    EXPECT_EQ(t[p * 4 + 1], static_cast<float>(std::sin(p * 1.0)));
    EXPECT_EQ(t[p * 4 + 2], static_cast<float>(std::cos(p * std::pow(10000.0, -0.5))));
    EXPECT_EQ(t[p * 4 + 3], static_cast<float>(std::sin(p * std::pow(10000.0, -0.5))));
  }
}

// The fused layout with G = 2 groups of r = 3 query heads, D = 8, T = 4.
constexpr int64_t kT = 4, kG = 2, kR = 3, kD = 8;

// q, k, v from the fused rows by hand (no RoPE): the reference split.
void SplitByHand(const Tensor& qkv, Tensor* q, Tensor* k, Tensor* v) {
  const float* in = qkv.data<float>();
  for (int64_t t = 0; t < kT; ++t) {
    for (int64_t g = 0; g < kG; ++g) {
      for (int64_t j = 0; j < kR + 2; ++j) {
        const float* row = in + ((t * kG + g) * (kR + 2) + j) * kD;
        float* out = j < kR    ? q->data<float>() + ((t * kG + g) * kR + j) * kD
                     : j == kR ? k->data<float>() + (t * kG + g) * kD
                               : v->data<float>() + (t * kG + g) * kD;
        std::copy(row, row + kD, out);
      }
    }
  }
}

TEST(QkvRopeTest, ForwardIsTheGroupedSplitThenRope) {
  const Tensor qkv = RandomNormal({kT, kG * (kR + 2) * kD}, 11);
  const Tensor pos = Tensor::FromVectorI32({0, 3, 100, 7}, {kT});
  const Tensor table = RopeTable(128, kD, kTheta);
  Tensor q = Tensor::Zeros({kT, kG * kR, kD}, DType::kF32);
  Tensor k = Tensor::Zeros({kT, kG, kD}, DType::kF32), v = Tensor::Zeros({kT, kG, kD}, DType::kF32);
  QkvRopeForward(qkv, pos, table, &q, &k, &v, CpuStream());

  Tensor q_ref = q.Clone(), k_ref = k.Clone(), v_ref = v.Clone();
  SplitByHand(qkv, &q_ref, &k_ref, &v_ref);
  // Token 0 sits at position 0: no rotation at all.
  EXPECT_EQ(q.Slice(0, 1).ToVector(), q_ref.Slice(0, 1).ToVector());
  EXPECT_EQ(k.Slice(0, 1).ToVector(), k_ref.Slice(0, 1).ToVector());
  RopeForward(q_ref, pos, table, &q_ref, CpuStream());
  RopeForward(k_ref, pos, table, &k_ref, CpuStream());
  EXPECT_EQ(q.ToVector(), q_ref.ToVector());
  EXPECT_EQ(k.ToVector(), k_ref.ToVector());
  EXPECT_EQ(v.ToVector(), v_ref.ToVector());  // values copied untouched
}

TEST(QkvRopeTest, BackwardInvertsForward) {
  const Tensor qkv = RandomNormal({kT, kG * (kR + 2) * kD}, 12);
  const Tensor pos = Tensor::FromVectorI32({9, 3, 100, 7}, {kT});
  const Tensor table = RopeTable(128, kD, kTheta);
  Tensor q = Tensor::Zeros({kT, kG * kR, kD}, DType::kF32);
  Tensor k = Tensor::Zeros({kT, kG, kD}, DType::kF32), v = Tensor::Zeros({kT, kG, kD}, DType::kF32);
  QkvRopeForward(qkv, pos, table, &q, &k, &v, CpuStream());
  Tensor back = Tensor::Zeros({kT, kG * (kR + 2) * kD}, DType::kF32);
  back.Fill(7.0f);
  QkvRopeBackward(q, k, v, pos, table, &back, CpuStream());  // overwrites every element
  EXPECT_TENSOR_NEAR(back, qkv, 1e-5, 1e-6);
}

TEST(QkvRopeTest, BackwardMatchesFiniteDifferences) {
  Tensor qkv = RandomNormal({kT, kG * (kR + 2) * kD}, 13);
  const Tensor pos = Tensor::FromVectorI32({1, 30, 2, 77}, {kT});
  const Tensor table = RopeTable(128, kD, kTheta);
  const Tensor cq = RandomNormal({kT, kG * kR, kD}, 14), ck = RandomNormal({kT, kG, kD}, 15),
               cv = RandomNormal({kT, kG, kD}, 16);
  Tensor q = Tensor::Zeros(cq.shape(), DType::kF32);
  Tensor k = Tensor::Zeros(ck.shape(), DType::kF32), v = Tensor::Zeros(cv.shape(), DType::kF32);
  auto loss = [&] {
    QkvRopeForward(qkv, pos, table, &q, &k, &v, CpuStream());
    return Dot(q, cq) + Dot(k, ck) + Dot(v, cv);
  };
  Tensor d_qkv = Tensor::Zeros(qkv.shape(), DType::kF32);
  QkvRopeBackward(cq, ck, cv, pos, table, &d_qkv, CpuStream());
  EXPECT_TRUE(GradientMatches(d_qkv, loss, &qkv));
}

TEST(QkvRopeTest, Bf16RoundsTheF32ResultOnce) {
  const Tensor qkv = RandomNormal({kT, kG * (kR + 2) * kD}, 17).To(DType::kBF16);
  const Tensor pos = Tensor::FromVectorI32({5, 6, 7, 8}, {kT});
  const Tensor table = RopeTable(16, kD, kTheta);
  Tensor q = Tensor::Zeros({kT, kG * kR, kD}, DType::kBF16);
  Tensor k = Tensor::Zeros({kT, kG, kD}, DType::kBF16),
         v = Tensor::Zeros({kT, kG, kD}, DType::kBF16);
  QkvRopeForward(qkv, pos, table, &q, &k, &v, CpuStream());
  Tensor qf = Tensor::Zeros(q.shape(), DType::kF32);
  Tensor kf = Tensor::Zeros(k.shape(), DType::kF32), vf = Tensor::Zeros(v.shape(), DType::kF32);
  QkvRopeForward(qkv.To(DType::kF32), pos, table, &qf, &kf, &vf, CpuStream());
  EXPECT_EQ(q.ToVector(), qf.To(DType::kBF16).ToVector());
  EXPECT_EQ(k.ToVector(), kf.To(DType::kBF16).ToVector());
  EXPECT_EQ(v.ToVector(), vf.To(DType::kBF16).ToVector());

  Tensor d_qkv = Tensor::Zeros(qkv.shape(), DType::kBF16);
  QkvRopeBackward(q, k, v, pos, table, &d_qkv, CpuStream());
  Tensor d_qkv_f = Tensor::Zeros(qkv.shape(), DType::kF32);
  QkvRopeBackward(q.To(DType::kF32), k.To(DType::kF32), v.To(DType::kF32), pos, table, &d_qkv_f,
                  CpuStream());
  EXPECT_EQ(d_qkv.ToVector(), d_qkv_f.To(DType::kBF16).ToVector());
}

TEST(RopeDeathTest, PositionOutsideTheTableIsRejected) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor table = RopeTable(8, 4, kTheta);
  const Tensor x = Tensor::Zeros({1, 1, 4}, DType::kF32);
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  EXPECT_DEATH(RopeForward(x, Tensor::FromVectorI32({8}, {1}), table, &y, CpuStream()),
               "position 8 outside the table");
  EXPECT_DEATH(
      RopeForward(x, Tensor::FromVectorI32({0}, {1}), RopeTable(8, 6, kTheta), &y, CpuStream()),
      "table must be");
}

TEST(QkvRopeDeathTest, ShapesAreChecked) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor table = RopeTable(8, 4, kTheta);
  const Tensor pos = Tensor::FromVectorI32({0}, {1});
  Tensor k = Tensor::Zeros({1, 2, 4}, DType::kF32), v = Tensor::Zeros({1, 2, 4}, DType::kF32);
  Tensor q = Tensor::Zeros({1, 3, 4}, DType::kF32);  // 3 query heads do not split over G = 2
  const Tensor qkv = Tensor::Zeros({1, 2 * 4 * 4}, DType::kF32);
  EXPECT_DEATH(QkvRopeForward(qkv, pos, table, &q, &k, &v, CpuStream()), "q must be");
  Tensor q4 = Tensor::Zeros({1, 4, 4}, DType::kF32);
  const Tensor wrong = Tensor::Zeros({1, 2 * 4 * 4 + 4}, DType::kF32);
  EXPECT_DEATH(QkvRopeForward(wrong, pos, table, &q4, &k, &v, CpuStream()), "qkv must have shape");
}

TEST(RopeDeathTest, OddHeadDimIsRejected) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor x = Tensor::Zeros({1, 1, 3}, DType::kF32);
  const Tensor pos = Tensor::FromVectorI32({0}, {1});
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32);
  EXPECT_DEATH(RopeForward(x, pos, RopeTable(1, 4, kTheta), &y, CpuStream()),
               "head dim D must be even");
}

}  // namespace
}  // namespace moefold::ops
