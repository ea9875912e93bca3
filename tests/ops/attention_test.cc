// Tests of causal GQA attention: forward vs a naive masked softmax(QKᵀ)V built as a full S×S
// matrix, and finite-difference checks of d_q, d_k, d_v with Hq = 4, Hkv = 2.
#include "ops/attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

constexpr int64_t kB = 2, kS = 5, kHq = 4, kHkv = 2, kD = 4;

float At(const Tensor& t, int64_t b, int64_t s, int64_t h, int64_t d) {
  return t.data<float>()[((b * t.dim(1) + s) * t.dim(2) + h) * t.dim(3) + d];
}

// Naive reference: scores = scale·QKᵀ with −inf above the diagonal, row softmax, times V.
void NaiveAttention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                    Tensor* lse) {
  const int64_t batch = q.dim(0), seq = q.dim(1), hq = q.dim(2), dim = q.dim(3);
  const int64_t group = hq / k.dim(2);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < hq; ++h) {
      std::vector<std::vector<double>> s(seq, std::vector<double>(seq));
      for (int64_t i = 0; i < seq; ++i) {
        for (int64_t j = 0; j < seq; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < dim; ++c) dot += At(q, b, i, h, c) * At(k, b, j, h / group, c);
          s[i][j] = j > i ? -std::numeric_limits<double>::infinity() : scale * dot;
        }
        double sum = 0;
        for (int64_t j = 0; j < seq; ++j) sum += std::exp(s[i][j]);
        lse->data<float>()[(b * hq + h) * seq + i] = static_cast<float>(std::log(sum));
        for (int64_t c = 0; c < dim; ++c) {
          double o = 0;
          for (int64_t j = 0; j < seq; ++j)
            o += std::exp(s[i][j]) / sum * At(v, b, j, h / group, c);
          out->data<float>()[((b * seq + i) * hq + h) * dim + c] = static_cast<float>(o);
        }
      }
    }
  }
}

TEST(AttentionTest, ForwardMatchesNaiveMaskedSoftmax) {
  const Tensor q = RandomNormal({kB, kS, kHq, kD}, 1);
  const Tensor k = RandomNormal({kB, kS, kHkv, kD}, 2);
  const Tensor v = RandomNormal({kB, kS, kHkv, kD}, 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
  Tensor out = Tensor::Zeros(q.shape(), DType::kF32),
         lse = Tensor::Zeros({kB, kHq, kS}, DType::kF32);
  Tensor ref_out = out.Clone(), ref_lse = lse.Clone();
  AttentionForward(q, k, v, scale, &out, &lse, CpuStream());
  NaiveAttention(q, k, v, scale, &ref_out, &ref_lse);
  EXPECT_TENSOR_NEAR(out, ref_out, 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(lse, ref_lse, 1e-5, 1e-6);
  // The first query sees only the first key: its output is that key's value row, exactly.
  for (int64_t h = 0; h < kHq; ++h) {
    for (int64_t c = 0; c < kD; ++c) EXPECT_NEAR(At(out, 1, 0, h, c), At(v, 1, 0, h / 2, c), 1e-6);
  }
}

TEST(AttentionTest, BackwardMatchesFiniteDifferences) {
  Tensor q = RandomNormal({kB, kS, kHq, kD}, 4);
  Tensor k = RandomNormal({kB, kS, kHkv, kD}, 5);
  Tensor v = RandomNormal({kB, kS, kHkv, kD}, 6);
  const Tensor cot = RandomNormal(q.shape(), 7);
  const float scale = 0.5f;
  Tensor out = Tensor::Zeros(q.shape(), DType::kF32),
         lse = Tensor::Zeros({kB, kHq, kS}, DType::kF32);
  auto loss = [&] {
    AttentionForward(q, k, v, scale, &out, &lse, CpuStream());
    return Dot(out, cot);
  };
  loss();
  // Garbage in the outputs: backward overwrites them.
  Tensor d_q = RandomNormal(q.shape(), 8), d_k = RandomNormal(k.shape(), 9);
  Tensor d_v = RandomNormal(v.shape(), 10);
  AttentionBackward(q, k, v, out, lse, cot, scale, &d_q, &d_k, &d_v, CpuStream());
  EXPECT_TRUE(GradientMatches(d_q, loss, &q));
  EXPECT_TRUE(GradientMatches(d_k, loss, &k));
  EXPECT_TRUE(GradientMatches(d_v, loss, &v));
}

TEST(AttentionDeathTest, HeadsMustGroup) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor q = Tensor::Zeros({1, 2, 3, 4}, DType::kF32);
  const Tensor kv = Tensor::Zeros({1, 2, 2, 4}, DType::kF32);
  Tensor out = Tensor::Zeros(q.shape(), DType::kF32), lse = Tensor::Zeros({1, 3, 2}, DType::kF32);
  EXPECT_DEATH(AttentionForward(q, kv, kv, 1.0f, &out, &lse, CpuStream()),
               "query heads 3 must be a multiple of KV heads 2");
}

}  // namespace
}  // namespace moefold::ops
