// GPU parity of the embedding gather and its scatter-add backward (repeated ids, f32 d_table)
// against the CPU reference (skips without a GPU).
#include "ops/embedding.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::DTypeName;
using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

class CudaEmbeddingTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaEmbeddingTest, ForwardAndBackward) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t vocab = 50, hidden = 40, tokens = 64;  // 64 ids over 50 rows: repeats
  const Tensor ids = RandomInts({tokens}, 1, vocab);
  const Tensor table = RoundedTo(RandomNormal({vocab, hidden}, 2), dt);
  Tensor out = Tensor::Zeros({tokens, hidden}, DType::kF32);
  EmbeddingForward(ids, table, &out, CpuStream());
  Tensor out_gpu = Poisoned({tokens, hidden}, dt);
  const Tensor ids_gpu = ids.To(Gpu());
  EmbeddingForward(ids_gpu, ToGpu(table, dt), &out_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(out_gpu, out, DType::kF32)) << "a gather is exact";

  const Tensor d_out = RoundedTo(RandomNormal({tokens, hidden}, 3), dt);
  const Tensor d_table0 = RandomNormal({vocab, hidden}, 4);
  Tensor d_table = d_table0.Clone();
  EmbeddingBackward(ids, d_out, &d_table, CpuStream());
  Tensor d_table_gpu = d_table0.To(Gpu());
  EmbeddingBackward(ids_gpu, ToGpu(d_out, dt), &d_table_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_table_gpu, d_table, DType::kF32));
}

TEST(CudaEmbeddingDeathTest, OutOfRangeIdNamesItsPosition) {
  MF_REQUIRE_GPU();
  // A fresh process for the death: a forked child cannot use the parent's CUDA context.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor table = RandomNormal({10, 4}, 5).To(Gpu());
  const Tensor ids = Tensor::FromVectorI32({1, 2, 10, 3}, {4}).To(Gpu());
  Tensor out = Tensor::Empty({4, 4}, DType::kF32, Gpu());
  EXPECT_DEATH(EmbeddingForward(ids, table, &out, GpuStream()),
               "token id 10 at position 2 is out of range");
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaEmbeddingTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
