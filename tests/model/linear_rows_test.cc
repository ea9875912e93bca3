// The token-wise split of the recompute (core/model/recompute_rows.h) needs a projection's rows
// [r, M) recomputed with the bits the forward gave them. A plain GEMM over rows [r, M) does not
// guarantee that: OpenBLAS picks its kernels by M (tail rows, small-matrix paths), and on this
// machine an f32 row slice differs from the same rows of the whole GEMM in the last bit for
// several r. LinearRows runs the GEMM over fixed row blocks counted from row 0, so a recompute
// from a block boundary repeats the forward's very calls: checked here in f32 and bf16 for row
// counts that are no multiple of a kernel tile, and the FP8 delayed and blockwise recipes are
// checked end to end (tests/train/activation_policy_test.cc).
#include "core/model/linear.h"

#include <cstring>

#include "core/model/recompute_rows.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

void ExpectBlockRangesMatchTheWhole(DType dtype, int64_t m, int64_t k, int64_t n) {
  ParameterSet params;
  Parameter* param = params.Add("w.weight", {n, k}, GradReduction::kDenseDataCp, 0.5f);
  params.Initialize(3);
  const Tensor w = param->value.To(dtype);
  const Tensor x = testing::RandomNormal({m, k}, 11).To(dtype);
  StepContext ctx{&CpuStream()};
  Tensor whole = Tensor::Empty({m, n}, dtype);
  ASSERT_OK(LinearRows(ctx, *param, x, w, 0, &whole));
  const int64_t block = GemmRowBlock(m);
  EXPECT_LE((m + block - 1) / block, 8) << "at most 8 GEMMs";
  for (int64_t missing : {int64_t{1}, m / 3, m / 2 + 1, m - 7, m - 1}) {
    const int64_t first = GemmBlockStart(missing, m);
    EXPECT_EQ(first % block, 0);
    EXPECT_LE(first, missing);
    Tensor rows = Tensor::Empty({m - first, n}, dtype);
    ASSERT_OK(LinearRows(ctx, *param, x, w, first, &rows));
    const Tensor expect = whole.Slice(first, m);
    EXPECT_EQ(std::memcmp(rows.raw_data(), expect.raw_data(), rows.nbytes()), 0)
        << DTypeName(dtype) << " M=" << m << " K=" << k << " N=" << n << ": rows [" << first
        << ", " << m << ") differ from the forward's";
  }
}

TEST(LinearRowsTest, ARecomputedRowRangeHasTheForwardsBits) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    ExpectBlockRangesMatchTheWhole(dtype, 37, 72, 48);
    ExpectBlockRangesMatchTheWhole(dtype, 131, 96, 200);
    ExpectBlockRangesMatchTheWhole(dtype, 523, 257, 129);  // a K and N off every tile
  }
}

TEST(LinearRowsTest, BlocksAreAtLeastEightRowsAndAtMostEightGemms) {
  EXPECT_EQ(GemmRowBlock(1), 8);
  EXPECT_EQ(GemmRowBlock(26), 8);
  EXPECT_EQ(GemmRowBlock(64), 8);
  EXPECT_EQ(GemmRowBlock(65), 16);
  EXPECT_EQ(GemmRowBlock(8192), 1024);
  EXPECT_EQ(GemmBlockStart(7, 26), 0);
  EXPECT_EQ(GemmBlockStart(13, 26), 8);
  EXPECT_EQ(GemmBlockStart(26, 26), 26) << "nothing missing";
}

}  // namespace
}  // namespace moefold::model
