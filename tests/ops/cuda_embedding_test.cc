// GPU parity of the embedding gather and its scatter-add backward (repeated ids, f32 d_table)
// against the CPU reference, at hidden sizes on and off the 16-byte packs and at unaligned views,
// the same for vocabulary shards (ids outside the shard: zero rows, no gradient; an empty shard),
// and the trap on a bad id (skips without a GPU).
#include <utility>
#include <vector>

#include "ops/embedding.h"
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

TEST_P(CudaEmbeddingTest, PackAndScalarPathsAtOddShapes) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t vocab = 37;
  for (const auto& [tokens, hidden] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 2048}, {7, 2048}, {7, 2050}, {7, 1}, {300, 64}}) {
    SCOPED_TRACE(::testing::Message() << tokens << "×" << hidden);
    const Tensor ids = RandomInts({tokens}, 6, vocab);
    const Tensor table = RoundedTo(RandomNormal({vocab, hidden}, 7), dt);
    Tensor out = Tensor::Zeros({tokens, hidden}, DType::kF32);
    EmbeddingForward(ids, table, &out, CpuStream());
    const Tensor d_out = RoundedTo(RandomNormal({tokens, hidden}, 8), dt);
    const Tensor d_table0 = RandomNormal({vocab, hidden}, 9);
    Tensor d_table = d_table0.Clone();
    EmbeddingBackward(ids, d_out, &d_table, CpuStream());
    for (int64_t offset : {kAligned, kUnaligned}) {
      SCOPED_TRACE(offset);
      const Tensor ids_gpu = ToGpuAt(ids, DType::kI32, offset);
      Tensor out_gpu = PoisonedAt({tokens, hidden}, dt, offset);
      EmbeddingForward(ids_gpu, ToGpuAt(table, dt, offset), &out_gpu, GpuStream());
      EXPECT_TRUE(SameValues(out_gpu, ToGpu(out, dt))) << "a gather is exact";
      Tensor d_table_gpu = ToGpuAt(d_table0, DType::kF32, offset);
      EmbeddingBackward(ids_gpu, ToGpuAt(d_out, dt, offset), &d_table_gpu, GpuStream());
      EXPECT_TRUE(ParityNear(d_table_gpu, d_table, DType::kF32));
    }
  }
}

TEST_P(CudaEmbeddingTest, ShardsMatchTheCpu) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t vocab = 37, tokens = 50;
  // Shards [0, 13), [13, 37) and an empty one at the end; H on and off the packs.
  const int64_t bounds[] = {0, 13, 37, 37};
  for (const int64_t hidden : {int64_t{64}, int64_t{66}, int64_t{1}}) {
    const Tensor ids = RandomInts({tokens}, 10, vocab);
    const Tensor table = RoundedTo(RandomNormal({vocab, hidden}, 11), dt);
    const Tensor d_out = RoundedTo(RandomNormal({tokens, hidden}, 12), dt);
    for (int r = 0; r < 3; ++r) {
      SCOPED_TRACE(::testing::Message() << "H " << hidden << " shard " << r);
      const int64_t begin = bounds[r], end = bounds[r + 1];
      const Tensor shard = table.Slice(begin, end).Clone();
      Tensor out = Tensor::Zeros({tokens, hidden}, DType::kF32);
      EmbeddingShardForward(ids, shard, begin, &out, CpuStream());
      const Tensor d_shard0 = RandomNormal({end - begin, hidden}, 13);
      Tensor d_shard = d_shard0.Clone();
      EmbeddingShardBackward(ids, d_out, begin, &d_shard, CpuStream());
      for (int64_t offset : {kAligned, kUnaligned}) {
        SCOPED_TRACE(offset);
        const Tensor ids_gpu = ToGpuAt(ids, DType::kI32, offset);
        Tensor out_gpu = PoisonedAt({tokens, hidden}, dt, offset);
        EmbeddingShardForward(ids_gpu, ToGpuAt(shard, dt, offset), begin, &out_gpu, GpuStream());
        EXPECT_TRUE(SameValues(out_gpu, ToGpu(out, dt))) << "a gather is exact, zeros included";
        Tensor d_shard_gpu = ToGpuAt(d_shard0, DType::kF32, offset);
        EmbeddingShardBackward(ids_gpu, ToGpuAt(d_out, dt, offset), begin, &d_shard_gpu,
                               GpuStream());
        EXPECT_TRUE(ParityNear(d_shard_gpu, d_shard, DType::kF32));
      }
    }
  }
}

// A bad id traps the kernel; no host wait happens inside the op. The printed id and position go to
// the device's printf buffer (stdout), which a trapped context does not reliably flush, so the
// test asserts the failure the next synchronisation reports.
TEST(CudaEmbeddingDeathTest, OutOfRangeIdTrapsTheKernel) {
  MF_REQUIRE_GPU();
  // A fresh process for the death: a forked child cannot use the parent's CUDA context.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor table = RandomNormal({10, 4}, 5).To(Gpu());
  const Tensor ids = Tensor::FromVectorI32({1, 2, 10, 3}, {4}).To(Gpu());
  Tensor out = Tensor::Empty({4, 4}, DType::kF32, Gpu());
  EXPECT_DEATH(
      {
        EmbeddingForward(ids, table, &out, GpuStream());
        GpuStream().Synchronize();
      },
      "failed at");
  Tensor d_table = Tensor::Zeros({10, 4}, DType::kF32, Gpu());
  EXPECT_DEATH(
      {
        EmbeddingBackward(ids, out, &d_table, GpuStream());
        GpuStream().Synchronize();
      },
      "failed at");
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaEmbeddingTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
