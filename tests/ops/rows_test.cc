// Tests of the row gather (hand example with zero rows, bf16 bits untouched, every row of x usable
// twice or never) and of the block sum (member order, f32 accumulator under bf16, single block).
#include "ops/rows.h"

#include <vector>

#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::RandomNormal;

TEST(GatherRowsTest, HandExampleWithZeroRows) {
  const Tensor x = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {3, 2});
  const Tensor index = Tensor::FromVectorI32({2, -1, 0, 2}, {4});
  Tensor out = Tensor::Empty({4, 2}, DType::kF32);
  out.Fill(9.0f);
  GatherRows(x, index, &out, CpuStream());
  EXPECT_EQ(out.ToVector(), (std::vector<float>{5, 6, 0, 0, 1, 2, 5, 6}));
}

TEST(GatherRowsTest, MovesBf16BitsIntoAView) {
  const Tensor x = RandomNormal({5, 3}, 1).To(DType::kBF16);
  const Tensor index = Tensor::FromVectorI32({4, 3, 2, 1, 0}, {5});
  Tensor big = Tensor::Zeros({7, 3}, DType::kBF16);
  Tensor view = big.Slice(1, 6);
  GatherRows(x, index, &view, CpuStream());
  const std::vector<float> xs = x.ToVector(), got = big.ToVector();
  for (int r = 0; r < 5; ++r) {
    for (int h = 0; h < 3; ++h) EXPECT_EQ(got[(1 + r) * 3 + h], xs[(4 - r) * 3 + h]);
  }
  EXPECT_EQ(got[0], 0.0f);
  EXPECT_EQ(got[6 * 3], 0.0f);
  // An empty index gives an empty output.
  Tensor none = Tensor::Empty({0, 3}, DType::kBF16);
  GatherRows(x, Tensor::Empty({0}, DType::kI32), &none, CpuStream());
}

TEST(GatherRowsDeathTest, AnIndexOutsideTheRowsIsNamed) {
  const Tensor x = Tensor::Zeros({3, 2}, DType::kF32);
  Tensor out = Tensor::Empty({2, 2}, DType::kF32);
  EXPECT_DEATH(GatherRows(x, Tensor::FromVectorI32({0, 3}, {2}), &out, CpuStream()),
               "index\\[1\\] = 3 is not a row");
  EXPECT_DEATH(GatherRows(x, Tensor::FromVectorI32({-2, 0}, {2}), &out, CpuStream()),
               "index\\[0\\] = -2");
}

TEST(SumBlocksTest, AddsTheBlocksInOrder) {
  // Three blocks of (2, 2): out = b0 + b1 + b2.
  const Tensor blocks =
      Tensor::FromVector({1, 2, 3, 4, 10, 20, 30, 40, 100, 200, 300, 400}, {6, 2});
  Tensor out = Tensor::Empty({2, 2}, DType::kF32);
  SumBlocks(blocks, &out, CpuStream());
  EXPECT_EQ(out.ToVector(), (std::vector<float>{111, 222, 333, 444}));
  // Order matters in f32: (1 + 1e8) − 1e8 = 0 (the 1 is lost), 1 + (1e8 − 1e8) = 1. The blocks
  // are added as ((b0 + b1) + b2).
  const Tensor ordered = Tensor::FromVector({1.0f, 1e8f, -1e8f}, {3});
  Tensor sum = Tensor::Empty({1}, DType::kF32);
  SumBlocks(ordered, &sum, CpuStream());
  EXPECT_EQ(sum.ToVector()[0], 0.0f);
  // One block is a copy.
  Tensor copy = Tensor::Empty({2, 2}, DType::kF32);
  SumBlocks(blocks.Slice(0, 2), &copy, CpuStream());
  EXPECT_EQ(copy.ToVector(), (std::vector<float>{1, 2, 3, 4}));
}

TEST(SumBlocksTest, Bf16IsSummedInF32AndRoundedOnce) {
  // 256 then seven 1s: a bf16 accumulator stays at 256 (spacing 2); f32 reaches 263 → 264.
  std::vector<float> values = {256.0f};
  for (int i = 0; i < 7; ++i) values.push_back(1.0f);
  const Tensor blocks = Tensor::FromVector(values, {8, 1}).To(DType::kBF16);
  Tensor out = Tensor::Empty({1, 1}, DType::kBF16);
  SumBlocks(blocks, &out, CpuStream());
  EXPECT_EQ(out.ToVector()[0], RoundTrip(263.0f, DType::kBF16));
  EXPECT_GT(out.ToVector()[0], 256.0f);
}

}  // namespace
}  // namespace moefold::ops
