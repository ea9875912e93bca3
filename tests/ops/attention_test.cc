// Tests of GQA attention: the causal op and the block ops (causal and full masks, query and key
// blocks of different lengths) against a naive masked softmax(QKᵀ)V built as a full Sq×Skv matrix,
// finite-difference checks of d_q, d_k, d_v with Hq = 4, Hkv = 2 (and of the block backward's
// accumulation), the flash-attention identity that lets a ring split the keys (merged block
// forwards and summed block backwards equal the whole), the online-softmax merge with empty sides,
// and the chunk-layout swap.
#include "ops/attention.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

constexpr int64_t kB = 2, kS = 5, kHq = 4, kHkv = 2, kD = 4;

float At(const Tensor& t, int64_t b, int64_t s, int64_t h, int64_t d) {
  return t.data<float>()[((b * t.dim(1) + s) * t.dim(2) + h) * t.dim(3) + d];
}

// Naive reference: scores = scale·QKᵀ (Sq × Skv) with −inf above the diagonal when causal, row
// softmax, times V.
void NaiveAttention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, bool causal,
                    Tensor* out, Tensor* lse) {
  const int64_t batch = q.dim(0), seq = q.dim(1), kv_seq = k.dim(1), hq = q.dim(2), dim = q.dim(3);
  const int64_t group = hq / k.dim(2);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < hq; ++h) {
      std::vector<std::vector<double>> s(seq, std::vector<double>(kv_seq));
      for (int64_t i = 0; i < seq; ++i) {
        for (int64_t j = 0; j < kv_seq; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < dim; ++c) dot += At(q, b, i, h, c) * At(k, b, j, h / group, c);
          s[i][j] = causal && j > i ? -std::numeric_limits<double>::infinity() : scale * dot;
        }
        double sum = 0;
        for (int64_t j = 0; j < kv_seq; ++j) sum += std::exp(s[i][j]);
        lse->data<float>()[(b * hq + h) * seq + i] = static_cast<float>(std::log(sum));
        for (int64_t c = 0; c < dim; ++c) {
          double o = 0;
          for (int64_t j = 0; j < kv_seq; ++j)
            o += std::exp(s[i][j]) / sum * At(v, b, j, h / group, c);
          out->data<float>()[((b * seq + i) * hq + h) * dim + c] = static_cast<float>(o);
        }
      }
    }
  }
}
void NaiveAttention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                    Tensor* lse) {
  NaiveAttention(q, k, v, scale, /*causal=*/true, out, lse);
}

// Rows [begin, end) of a (B, S, H, D) tensor along S, as a new tensor.
Tensor SeqRows(const Tensor& x, int64_t begin, int64_t end) {
  const int64_t batch = x.dim(0), seq = x.dim(1), row = x.dim(2) * x.dim(3);
  Tensor out = Tensor::Empty({batch, end - begin, x.dim(2), x.dim(3)}, x.dtype());
  const size_t bytes = DTypeSize(x.dtype());
  for (int64_t b = 0; b < batch; ++b) {
    std::memcpy(static_cast<char*>(out.raw_data()) + b * (end - begin) * row * bytes,
                static_cast<const char*>(x.raw_data()) + (b * seq + begin) * row * bytes,
                (end - begin) * row * bytes);
  }
  return out;
}

// Entries [begin, end) of the last dimension of an lse (B, H, S).
Tensor LseRows(const Tensor& lse, int64_t begin, int64_t end) {
  const int64_t rows = lse.dim(0) * lse.dim(1), seq = lse.dim(2);
  Tensor out = Tensor::Empty({lse.dim(0), lse.dim(1), end - begin}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = begin; i < end; ++i) {
      out.data<float>()[r * (end - begin) + i - begin] = lse.data<float>()[r * seq + i];
    }
  }
  return out;
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

TEST(AttentionBlockTest, ForwardMatchesNaiveForEachMaskAndLength) {
  const float scale = 0.6f;
  struct Case {
    int64_t q_seq, kv_seq;
    AttentionMask mask;
  };
  for (const Case& c : {Case{3, 7, AttentionMask::kNone}, Case{6, 2, AttentionMask::kNone},
                        Case{5, 5, AttentionMask::kCausal}}) {
    const Tensor q = RandomNormal({kB, c.q_seq, kHq, kD}, 11);
    const Tensor k = RandomNormal({kB, c.kv_seq, kHkv, kD}, 12);
    const Tensor v = RandomNormal({kB, c.kv_seq, kHkv, kD}, 13);
    Tensor out = Tensor::Zeros(q.shape(), DType::kF32);
    Tensor lse = Tensor::Zeros({kB, kHq, c.q_seq}, DType::kF32);
    Tensor ref_out = out.Clone(), ref_lse = lse.Clone();
    AttentionBlockForward(q, k, v, scale, c.mask, &out, &lse, CpuStream());
    NaiveAttention(q, k, v, scale, c.mask == AttentionMask::kCausal, &ref_out, &ref_lse);
    EXPECT_TENSOR_NEAR(out, ref_out, 1e-5, 1e-6) << c.q_seq << "x" << c.kv_seq;
    EXPECT_TENSOR_NEAR(lse, ref_lse, 1e-5, 1e-6) << c.q_seq << "x" << c.kv_seq;
  }
}

TEST(AttentionBlockTest, CausalBlockEqualsTheCausalOp) {
  const Tensor q = RandomNormal({kB, kS, kHq, kD}, 14);
  const Tensor k = RandomNormal({kB, kS, kHkv, kD}, 15), v = RandomNormal({kB, kS, kHkv, kD}, 16);
  Tensor out = Tensor::Zeros(q.shape(), DType::kF32),
         lse = Tensor::Zeros({kB, kHq, kS}, DType::kF32);
  Tensor block_out = out.Clone(), block_lse = lse.Clone();
  AttentionForward(q, k, v, 0.5f, &out, &lse, CpuStream());
  AttentionBlockForward(q, k, v, 0.5f, AttentionMask::kCausal, &block_out, &block_lse, CpuStream());
  EXPECT_TENSOR_NEAR(block_out, out, 0, 0);
  EXPECT_TENSOR_NEAR(block_lse, lse, 0, 0);
}

// One block over all keys: its out and lse are final, so the block backward is the whole gradient;
// it adds to (random) d_q, d_k, d_v.
TEST(AttentionBlockTest, BackwardMatchesFiniteDifferencesAndAccumulates) {
  for (const AttentionMask mask : {AttentionMask::kNone, AttentionMask::kCausal}) {
    const int64_t q_seq = 4, kv_seq = mask == AttentionMask::kCausal ? 4 : 6;
    Tensor q = RandomNormal({kB, q_seq, kHq, kD}, 21);
    Tensor k = RandomNormal({kB, kv_seq, kHkv, kD}, 22),
           v = RandomNormal({kB, kv_seq, kHkv, kD}, 23);
    const Tensor cot = RandomNormal(q.shape(), 24);
    const float scale = 0.5f;
    Tensor out = Tensor::Zeros(q.shape(), DType::kF32),
           lse = Tensor::Zeros({kB, kHq, q_seq}, DType::kF32);
    auto loss = [&] {
      AttentionBlockForward(q, k, v, scale, mask, &out, &lse, CpuStream());
      return Dot(out, cot);
    };
    loss();
    const Tensor dq0 = RandomNormal(q.shape(), 25), dk0 = RandomNormal(k.shape(), 26);
    const Tensor dv0 = RandomNormal(v.shape(), 27);
    Tensor d_q = dq0.Clone(), d_k = dk0.Clone(), d_v = dv0.Clone();
    AttentionBlockBackward(q, k, v, out, lse, cot, scale, mask, &d_q, &d_k, &d_v, CpuStream());
    EXPECT_TRUE(GradientMatches(Delta(d_q, dq0), loss, &q));
    EXPECT_TRUE(GradientMatches(Delta(d_k, dk0), loss, &k));
    EXPECT_TRUE(GradientMatches(Delta(d_v, dv0), loss, &v));
  }
}

// What a ring relies on: a causal sequence of two chunks, its keys split by chunk. The second
// chunk's queries see the first chunk fully and their own causally; the two partials merge into
// the causal op's result, and the block backwards from the final out and lse sum to its gradients.
TEST(AttentionBlockTest, SplitKeysMergeAndSumToTheWhole) {
  constexpr int64_t kChunk = 3, kSeq = 2 * kChunk;
  const float scale = 0.7f;
  const Tensor q = RandomNormal({kB, kSeq, kHq, kD}, 31);
  const Tensor k = RandomNormal({kB, kSeq, kHkv, kD}, 32),
               v = RandomNormal({kB, kSeq, kHkv, kD}, 33);
  const Tensor d_out = RandomNormal(q.shape(), 34);
  Tensor out = Tensor::Zeros(q.shape(), DType::kF32),
         lse = Tensor::Zeros({kB, kHq, kSeq}, DType::kF32);
  AttentionForward(q, k, v, scale, &out, &lse, CpuStream());
  Tensor d_q = Tensor::Zeros(q.shape(), DType::kF32), d_k = Tensor::Zeros(k.shape(), DType::kF32);
  Tensor d_v = Tensor::Zeros(v.shape(), DType::kF32);
  AttentionBackward(q, k, v, out, lse, d_out, scale, &d_q, &d_k, &d_v, CpuStream());

  const Tensor q1 = SeqRows(q, kChunk, kSeq), d_out1 = SeqRows(d_out, kChunk, kSeq);
  const Tensor k0 = SeqRows(k, 0, kChunk), v0 = SeqRows(v, 0, kChunk);
  const Tensor k1 = SeqRows(k, kChunk, kSeq), v1 = SeqRows(v, kChunk, kSeq);
  const Shape part_shape = q1.shape(), lse_shape{kB, kHq, kChunk};
  Tensor full_out = Tensor::Zeros(part_shape, DType::kF32),
         full_lse = Tensor::Zeros(lse_shape, DType::kF32);
  Tensor diag_out = full_out.Clone(), diag_lse = full_lse.Clone();
  AttentionBlockForward(q1, k0, v0, scale, AttentionMask::kNone, &full_out, &full_lse, CpuStream());
  AttentionBlockForward(q1, k1, v1, scale, AttentionMask::kCausal, &diag_out, &diag_lse,
                        CpuStream());
  AttentionMerge(full_out, full_lse, diag_out, diag_lse, &full_out, &full_lse, CpuStream());
  const Tensor out1 = SeqRows(out, kChunk, kSeq), lse1 = LseRows(lse, kChunk, kSeq);
  EXPECT_TENSOR_NEAR(full_out, out1, 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(full_lse, lse1, 1e-5, 1e-6);

  // Backward of chunk 1's queries, block by block, against the whole sequence's gradients: d_q of
  // chunk 1, and chunk 1's keys' d_k and d_v (only chunk 1's queries see them).
  Tensor dq1 = Tensor::Zeros(part_shape, DType::kF32);
  Tensor dk0 = Tensor::Zeros(k0.shape(), DType::kF32), dv0 = Tensor::Zeros(v0.shape(), DType::kF32);
  Tensor dk1 = dk0.Clone(), dv1 = dv0.Clone();
  AttentionBlockBackward(q1, k0, v0, out1, lse1, d_out1, scale, AttentionMask::kNone, &dq1, &dk0,
                         &dv0, CpuStream());
  AttentionBlockBackward(q1, k1, v1, out1, lse1, d_out1, scale, AttentionMask::kCausal, &dq1, &dk1,
                         &dv1, CpuStream());
  EXPECT_TENSOR_NEAR(dq1, SeqRows(d_q, kChunk, kSeq), 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(dk1, SeqRows(d_k, kChunk, kSeq), 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(dv1, SeqRows(d_v, kChunk, kSeq), 1e-5, 1e-6);
  // Chunk 0's keys also get chunk 0's queries' share, causally.
  const Tensor q0 = SeqRows(q, 0, kChunk);
  AttentionBlockBackward(q0, k0, v0, SeqRows(out, 0, kChunk), LseRows(lse, 0, kChunk),
                         SeqRows(d_out, 0, kChunk), scale, AttentionMask::kCausal, &dq1, &dk0, &dv0,
                         CpuStream());
  EXPECT_TENSOR_NEAR(dk0, SeqRows(d_k, 0, kChunk), 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(dv0, SeqRows(d_v, 0, kChunk), 1e-5, 1e-6);
}

// bf16 inputs: an f32 out is the f32 attention of the (exact) bf16 values, unrounded; a bf16 out
// is that, rounded once.
TEST(AttentionBlockTest, Bf16InputsWithF32OrBf16Out) {
  const Tensor q = RandomNormal({kB, 4, kHq, kD}, 41).To(DType::kBF16);
  const Tensor k = RandomNormal({kB, 6, kHkv, kD}, 42).To(DType::kBF16);
  const Tensor v = RandomNormal({kB, 6, kHkv, kD}, 43).To(DType::kBF16);
  Tensor ref_out = Tensor::Zeros({kB, 4, kHq, kD}, DType::kF32);
  Tensor ref_lse = Tensor::Zeros({kB, kHq, 4}, DType::kF32);
  AttentionBlockForward(q.To(DType::kF32), k.To(DType::kF32), v.To(DType::kF32), 0.5f,
                        AttentionMask::kNone, &ref_out, &ref_lse, CpuStream());
  Tensor out = Tensor::Zeros(ref_out.shape(), DType::kF32),
         lse = Tensor::Zeros(ref_lse.shape(), DType::kF32);
  AttentionBlockForward(q, k, v, 0.5f, AttentionMask::kNone, &out, &lse, CpuStream());
  EXPECT_TENSOR_NEAR(out, ref_out, 0, 0);
  EXPECT_TENSOR_NEAR(lse, ref_lse, 0, 0);
  Tensor out_bf16 = Tensor::Zeros(ref_out.shape(), DType::kBF16);
  AttentionBlockForward(q, k, v, 0.5f, AttentionMask::kNone, &out_bf16, &lse, CpuStream());
  EXPECT_TENSOR_NEAR(out_bf16.To(DType::kF32), ref_out.To(DType::kBF16).To(DType::kF32), 0, 0);
}

// A key block with no keys is an empty partial: out 0, lse −inf; its backward adds nothing.
TEST(AttentionBlockTest, EmptyKeyBlockIsAnEmptyPartial) {
  const Tensor q = RandomNormal({kB, 3, kHq, kD}, 45);
  const Tensor kv = Tensor::Zeros({kB, 0, kHkv, kD}, DType::kF32);
  Tensor out = RandomNormal(q.shape(), 46), lse = RandomNormal({kB, kHq, 3}, 47);
  AttentionBlockForward(q, kv, kv, 0.5f, AttentionMask::kNone, &out, &lse, CpuStream());
  for (int64_t i = 0; i < out.numel(); ++i) EXPECT_EQ(out.data<float>()[i], 0.0f);
  for (int64_t i = 0; i < lse.numel(); ++i) {
    EXPECT_EQ(lse.data<float>()[i], -std::numeric_limits<float>::infinity());
  }
  const Tensor dq0 = RandomNormal(q.shape(), 48);
  Tensor d_q = dq0.Clone(), d_k = kv.Clone(), d_v = kv.Clone();
  AttentionBlockBackward(q, kv, kv, RandomNormal(q.shape(), 49), RandomNormal(lse.shape(), 50),
                         RandomNormal(q.shape(), 51), 0.5f, AttentionMask::kNone, &d_q, &d_k, &d_v,
                         CpuStream());
  EXPECT_TENSOR_NEAR(d_q, dq0, 0, 0);
}

// Merge of random partials against the formula in f64, into separate outputs and in place.
TEST(AttentionMergeTest, MatchesTheFormula) {
  const Shape out_shape{kB, kS, kHq, kD}, lse_shape{kB, kHq, kS};
  const Tensor out_a = RandomNormal(out_shape, 51), out_b = RandomNormal(out_shape, 52);
  const Tensor lse_a = RandomNormal(lse_shape, 53, 3.0f), lse_b = RandomNormal(lse_shape, 54, 3.0f);
  Tensor expected = Tensor::Zeros(out_shape, DType::kF32),
         expected_lse = Tensor::Zeros(lse_shape, DType::kF32);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t i = 0; i < kS; ++i) {
      for (int64_t h = 0; h < kHq; ++h) {
        const int64_t stat = (b * kHq + h) * kS + i;
        const double la = lse_a.data<float>()[stat], lb = lse_b.data<float>()[stat];
        const double l = std::log(std::exp(la) + std::exp(lb));
        expected_lse.data<float>()[stat] = static_cast<float>(l);
        for (int64_t c = 0; c < kD; ++c) {
          expected.data<float>()[((b * kS + i) * kHq + h) * kD + c] = static_cast<float>(
              std::exp(la - l) * At(out_a, b, i, h, c) + std::exp(lb - l) * At(out_b, b, i, h, c));
        }
      }
    }
  }
  Tensor out = Tensor::Zeros(out_shape, DType::kF32), lse = Tensor::Zeros(lse_shape, DType::kF32);
  AttentionMerge(out_a, lse_a, out_b, lse_b, &out, &lse, CpuStream());
  EXPECT_TENSOR_NEAR(out, expected, 1e-6, 1e-6);
  EXPECT_TENSOR_NEAR(lse, expected_lse, 1e-6, 1e-6);
  // In place (the ring's running form), and symmetric.
  Tensor run_out = out_b.Clone(), run_lse = lse_b.Clone();
  AttentionMerge(out_a, lse_a, run_out, run_lse, &run_out, &run_lse, CpuStream());
  EXPECT_TENSOR_NEAR(run_out, expected, 1e-6, 1e-6);
  EXPECT_TENSOR_NEAR(run_lse, expected_lse, 1e-6, 1e-6);
  // A bf16 partial is read at its bf16 value.
  const Tensor out_b_bf16 = out_b.To(DType::kBF16);
  AttentionMerge(out_a, lse_a, out_b_bf16, lse_b, &out, &lse, CpuStream());
  Tensor widened = out.Clone();
  AttentionMerge(out_a, lse_a, out_b_bf16.To(DType::kF32), lse_b, &widened, &lse, CpuStream());
  EXPECT_TENSOR_NEAR(out, widened, 0, 0);
}

// An empty side (lse = −inf) contributes nothing and is never read: NaN in its out stays out, the
// other side comes through bit for bit, and two empty sides give out 0, lse −inf.
TEST(AttentionMergeTest, EmptySidesAreExact) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const Shape out_shape{1, 3, 2, kD}, lse_shape{1, 2, 3};
  const Tensor out_a = RandomNormal(out_shape, 61), lse_a = RandomNormal(lse_shape, 62);
  Tensor out_b = RandomNormal(out_shape, 63), lse_b = RandomNormal(lse_shape, 64);
  Tensor a = out_a.Clone(), la = lse_a.Clone();
  // Query 0: b empty; query 1: a empty; query 2: both empty (both heads each).
  for (int64_t h = 0; h < 2; ++h) {
    lse_b.data<float>()[h * 3 + 0] = -kInf;
    la.data<float>()[h * 3 + 1] = -kInf;
    la.data<float>()[h * 3 + 2] = -kInf;
    lse_b.data<float>()[h * 3 + 2] = -kInf;
    for (int64_t c = 0; c < kD; ++c) {
      out_b.data<float>()[((0 * 2) + h) * kD + c] = NAN;
      a.data<float>()[((1 * 2) + h) * kD + c] = NAN;
      a.data<float>()[((2 * 2) + h) * kD + c] = NAN;
      out_b.data<float>()[((2 * 2) + h) * kD + c] = NAN;
    }
  }
  Tensor out = RandomNormal(out_shape, 65), lse = RandomNormal(lse_shape, 66);
  AttentionMerge(a, la, out_b, lse_b, &out, &lse, CpuStream());
  for (int64_t h = 0; h < 2; ++h) {
    EXPECT_EQ(lse.data<float>()[h * 3 + 0], lse_a.data<float>()[h * 3 + 0]);
    EXPECT_EQ(lse.data<float>()[h * 3 + 1], lse_b.data<float>()[h * 3 + 1]);
    EXPECT_EQ(lse.data<float>()[h * 3 + 2], -kInf);
    for (int64_t c = 0; c < kD; ++c) {
      EXPECT_EQ(At(out, 0, 0, h, c), At(out_a, 0, 0, h, c));
      EXPECT_EQ(At(out, 0, 1, h, c), At(out_b, 0, 1, h, c));
      EXPECT_EQ(At(out, 0, 2, h, c), 0.0f);
    }
  }
}

TEST(SwapLeadingDimsTest, SwapsAndConverts) {
  const Tensor x = RandomNormal({3, 2, 5}, 71);
  Tensor out = Tensor::Zeros({2, 3, 5}, DType::kF32);
  SwapLeadingDims(x, &out, CpuStream());
  for (int64_t a = 0; a < 3; ++a) {
    for (int64_t n = 0; n < 2; ++n) {
      for (int64_t r = 0; r < 5; ++r) {
        EXPECT_EQ(out.data<float>()[(n * 3 + a) * 5 + r], x.data<float>()[(a * 2 + n) * 5 + r]);
      }
    }
  }
  Tensor rounded = Tensor::Zeros({2, 3, 5}, DType::kBF16);
  SwapLeadingDims(x, &rounded, CpuStream());
  EXPECT_TENSOR_NEAR(rounded.To(DType::kF32), out.To(DType::kBF16).To(DType::kF32), 0, 0);
  Tensor back = Tensor::Zeros({3, 2, 5}, DType::kF32);
  SwapLeadingDims(rounded, &back, CpuStream());
  EXPECT_TENSOR_NEAR(back, x.To(DType::kBF16).To(DType::kF32), 0, 0);
}

TEST(AttentionDeathTest, CausalBlockIsSquare) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor q = Tensor::Zeros({1, 2, 2, 4}, DType::kF32);
  const Tensor kv = Tensor::Zeros({1, 3, 2, 4}, DType::kF32);
  Tensor out = Tensor::Zeros(q.shape(), DType::kF32), lse = Tensor::Zeros({1, 2, 2}, DType::kF32);
  EXPECT_DEATH(
      AttentionBlockForward(q, kv, kv, 1.0f, AttentionMask::kCausal, &out, &lse, CpuStream()),
      "a causal block is a diagonal block");
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
