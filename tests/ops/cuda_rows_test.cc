// GPU parity of the row gather and the block sum: bit-exact against the CPU reference in f32 and
// bf16, on the 16-byte pack path and the scalar fallback (unaligned views), with zero rows (−1),
// repeated rows and an odd row width; a bad index traps the kernel (skips without a GPU).
#include <utility>
#include <vector>

#include "ops/rows.h"
#include "tests/ops/cuda_layouts.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::kAligned;
using ::moefold::ops::testing::kUnaligned;
using ::moefold::ops::testing::PoisonedAt;
using ::moefold::ops::testing::SameValues;
using ::moefold::ops::testing::ToGpuAt;
using ::moefold::testing::DTypeName;
using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;

class CudaRowsTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaRowsTest, GatherRowsIsBitExact) {
  MF_REQUIRE_GPU();
  const DType dtype = GetParam();
  for (const auto& [rows, hidden] :
       std::vector<std::pair<int64_t, int64_t>>{{37, 64}, {300, 24}, {5, 7}, {1, 1}}) {
    const Tensor x = RandomNormal({rows, hidden}, 1).To(dtype);
    // Every third entry −1; the rest repeat and skip rows.
    Tensor index = RandomInts({2 * rows}, 2, static_cast<int32_t>(rows));
    for (int64_t i = 0; i < index.numel(); i += 3) index.data<int32_t>()[i] = -1;
    Tensor expected = Tensor::Empty({2 * rows, hidden}, dtype);
    GatherRows(x, index, &expected, CpuStream());
    for (int64_t offset : {kAligned, kUnaligned}) {
      const Tensor x_gpu = ToGpuAt(x, dtype, offset);
      Tensor out = PoisonedAt({2 * rows, hidden}, dtype, offset);
      GatherRows(x_gpu, index.To(Gpu()), &out, GpuStream());
      EXPECT_TRUE(SameValues(out, expected)) << rows << "×" << hidden << " offset " << offset;
    }
  }
}

TEST_P(CudaRowsTest, SumBlocksIsBitExact) {
  MF_REQUIRE_GPU();
  const DType dtype = GetParam();
  for (const auto& [blocks, m] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 64}, {2, 4096}, {3, 37}, {8, 1000}}) {
    const Tensor in = RandomNormal({blocks * m}, 3).To(dtype);
    Tensor expected = Tensor::Empty({m}, dtype);
    SumBlocks(in, &expected, CpuStream());
    for (int64_t offset : {kAligned, kUnaligned}) {
      Tensor out = PoisonedAt({m}, dtype, offset);
      SumBlocks(ToGpuAt(in, dtype, offset), &out, GpuStream());
      EXPECT_TRUE(SameValues(out, expected))
          << blocks << " blocks of " << m << " offset " << offset;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaRowsTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

TEST(CudaRowsDeathTest, AnIndexOutsideTheRowsTrapsTheKernel) {
  MF_REQUIRE_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor x = Tensor::Zeros({3, 8}, DType::kF32, Gpu());
  Tensor out = Tensor::Empty({2, 8}, DType::kF32, Gpu());
  const Tensor index = Tensor::FromVectorI32({0, 3}, {2}).To(Gpu());
  EXPECT_DEATH(
      {
        GatherRows(x, index, &out, GpuStream());
        GpuStream().Synchronize();
      },
      "failed at");
}

}  // namespace
}  // namespace moefold::ops
