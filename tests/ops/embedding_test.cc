// Tests of the embedding gather and its scatter-add backward (repeated ids must sum), and of the
// same on vocabulary shards (their lookups sum to the full lookup, their gradients are its rows).
#include "ops/embedding.h"

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;

// An uneven split of 11 rows, with an empty shard at the end.
constexpr int64_t kShardBounds[] = {0, 4, 8, 11, 11};
constexpr int kShards = 4;

TEST(EmbeddingTest, ForwardGathersRows) {
  const Tensor table = Tensor::FromVector({0, 1, 10, 11, 20, 21}, {3, 2});
  const Tensor ids = Tensor::FromVectorI32({2, 0, 2}, {3});
  Tensor out = Tensor::Zeros({3, 2}, DType::kF32);
  EmbeddingForward(ids, table, &out, CpuStream());
  EXPECT_TENSOR_NEAR(out, Tensor::FromVector({20, 21, 0, 1, 20, 21}, {3, 2}), 0, 0);
}

TEST(EmbeddingTest, BackwardSumsRepeatedIdsAndAccumulates) {
  Tensor table = RandomNormal({5, 3}, 1);
  const Tensor ids =
      Tensor::FromVectorI32({1, 3, 1, 1, 0}, {5});  // id 1 three times, 2 and 4 never
  const Tensor cot = RandomNormal({5, 3}, 2);
  Tensor out = Tensor::Zeros({5, 3}, DType::kF32);
  auto loss = [&] {
    EmbeddingForward(ids, table, &out, CpuStream());
    return Dot(out, cot);
  };
  const Tensor before = RandomNormal({5, 3}, 3);
  Tensor d_table = before.Clone();
  EmbeddingBackward(ids, cot, &d_table, CpuStream());
  EXPECT_TRUE(GradientMatches(Delta(d_table, before), loss, &table));
  // Row 1 of the gradient is the sum of the cotangent rows 0, 2 and 3 exactly.
  const float* g = cot.data<float>();
  EXPECT_FLOAT_EQ(Delta(d_table, before).data<float>()[1 * 3 + 2], g[2] + g[8] + g[11]);
}

TEST(EmbeddingDeathTest, OutOfRangeIdNamesIdAndVocab) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS has started threads
  const Tensor table = Tensor::Zeros({4, 2}, DType::kF32);
  const Tensor ids = Tensor::FromVectorI32({1, 9}, {2});
  Tensor out = Tensor::Zeros({2, 2}, DType::kF32);
  EXPECT_DEATH(EmbeddingForward(ids, table, &out, CpuStream()),
               "token id 9 at position 1 is out of range \\[0, V=4\\)");
  const Tensor negative = Tensor::FromVectorI32({-1, 0}, {2});
  EXPECT_DEATH(EmbeddingForward(negative, table, &out, CpuStream()), "token id -1 at position 0");
}

TEST(EmbeddingShardTest, ShardLookupsSumToTheFullLookup) {
  const int64_t vocab = 11, hidden = 3, tokens = 20;
  const Tensor table = RandomNormal({vocab, hidden}, 4);
  const Tensor ids = RandomInts({tokens}, 5, vocab);
  Tensor full = Tensor::Zeros({tokens, hidden}, DType::kF32);
  EmbeddingForward(ids, table, &full, CpuStream());
  Tensor sum = Tensor::Zeros({tokens, hidden}, DType::kF32);
  for (int r = 0; r < kShards; ++r) {
    const int64_t begin = kShardBounds[r], end = kShardBounds[r + 1];
    Tensor out = RandomNormal({tokens, hidden}, 6);  // overwritten, zero rows included
    EmbeddingShardForward(ids, table.Slice(begin, end), begin, &out, CpuStream());
    for (int64_t t = 0; t < tokens; ++t) {
      const int32_t id = ids.data<int32_t>()[t];
      for (int64_t h = 0; h < hidden; ++h) {
        const float v = out.data<float>()[t * hidden + h];
        EXPECT_EQ(v, id >= begin && id < end ? full.data<float>()[t * hidden + h] : 0.0f)
            << "shard " << r << " token " << t;
        sum.data<float>()[t * hidden + h] += v;
      }
    }
  }
  EXPECT_TENSOR_NEAR(sum, full, 0, 0);
}

TEST(EmbeddingShardTest, ShardBackwardAccumulatesOnlyItsRows) {
  const int64_t vocab = 11, hidden = 3, tokens = 20;
  const Tensor ids = RandomInts({tokens}, 7, vocab);
  const Tensor cot = RandomNormal({tokens, hidden}, 8);
  Tensor d_full = Tensor::Zeros({vocab, hidden}, DType::kF32);
  EmbeddingBackward(ids, cot, &d_full, CpuStream());
  for (int r = 0; r < kShards; ++r) {
    SCOPED_TRACE(r);
    const int64_t begin = kShardBounds[r], end = kShardBounds[r + 1];
    Tensor shard = RandomNormal({end - begin, hidden}, 9);
    Tensor out = Tensor::Zeros({tokens, hidden}, DType::kF32);
    auto loss = [&] {
      EmbeddingShardForward(ids, shard, begin, &out, CpuStream());
      return Dot(out, cot);
    };
    const Tensor before = RandomNormal({end - begin, hidden}, 10);
    Tensor d_shard = before.Clone();
    EmbeddingShardBackward(ids, cot, begin, &d_shard, CpuStream());
    EXPECT_TRUE(GradientMatches(Delta(d_shard, before), loss, &shard));
    EXPECT_TENSOR_NEAR(Delta(d_shard, before), d_full.Slice(begin, end), 1e-6, 1e-6);
  }
}

// In bf16 a shard's rows are the bf16 table's rows: the lookup is exact, zeros included.
TEST(EmbeddingShardTest, Bf16LookupIsExact) {
  const int64_t vocab = 11, hidden = 4, tokens = 9;
  const Tensor table = RandomNormal({vocab, hidden}, 11).To(DType::kBF16);
  const Tensor ids = RandomInts({tokens}, 12, vocab);
  Tensor full = Tensor::Empty({tokens, hidden}, DType::kBF16);
  EmbeddingForward(ids, table, &full, CpuStream());
  Tensor sum = Tensor::Zeros({tokens, hidden}, DType::kF32);
  for (int r = 0; r < kShards; ++r) {
    const int64_t begin = kShardBounds[r], end = kShardBounds[r + 1];
    Tensor out = Tensor::Empty({tokens, hidden}, DType::kBF16);
    EmbeddingShardForward(ids, table.Slice(begin, end), begin, &out, CpuStream());
    const Tensor wide = out.To(DType::kF32);
    for (int64_t i = 0; i < sum.numel(); ++i) sum.data<float>()[i] += wide.data<float>()[i];
  }
  EXPECT_TENSOR_NEAR(sum, full.To(DType::kF32), 0, 0);
}

}  // namespace
}  // namespace moefold::ops
