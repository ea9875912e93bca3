// Tests of the embedding gather and its scatter-add backward (repeated ids must sum).
#include "ops/embedding.h"

#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

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

}  // namespace
}  // namespace moefold::ops
