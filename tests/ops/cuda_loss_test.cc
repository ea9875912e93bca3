// GPU parity of the fused cross entropy (ignored targets, large logits, backward in place over the
// logits, vocabularies on and off the 16-byte packs, unaligned views), of its vocabulary-shard
// partials, merge and backward (targets in other shards, an empty shard), and of the per-sample
// loss sums and means against the CPU reference (skips without a GPU).
#include <utility>
#include <vector>

#include "ops/loss.h"
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
using ::moefold::testing::Columns;
using ::moefold::testing::DTypeName;
using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

class CudaLossTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaLossTest, ForwardAndBackward) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t rows = 19, vocab = 32000;
  const Tensor logits = RoundedTo(RandomNormal({rows, vocab}, 1, 4.0f), dt);
  Tensor targets = RandomInts({rows}, 2, static_cast<int32_t>(vocab));
  targets.data<int32_t>()[3] = -1;  // ignored
  targets.data<int32_t>()[11] = -1;
  Tensor losses = Tensor::Zeros({rows}, DType::kF32), lse = Tensor::Zeros({rows}, DType::kF32);
  CrossEntropyForward(logits, targets, &losses, &lse, CpuStream());
  const Tensor targets_gpu = targets.To(Gpu());
  Tensor logits_gpu = ToGpu(logits, dt);
  Tensor losses_gpu = Poisoned({rows}, DType::kF32), lse_gpu = Poisoned({rows}, DType::kF32);
  CrossEntropyForward(logits_gpu, targets_gpu, &losses_gpu, &lse_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(losses_gpu, losses, DType::kF32));
  EXPECT_TRUE(ParityNear(lse_gpu, lse, DType::kF32));

  const Tensor d_losses = RandomNormal({rows}, 3);
  Tensor d_logits = Tensor::Zeros(logits.shape(), DType::kF32);
  CrossEntropyBackward(logits, targets, lse, d_losses, &d_logits, CpuStream());
  Tensor d_logits_gpu = Poisoned(logits.shape(), dt);
  CrossEntropyBackward(logits_gpu, targets_gpu, lse_gpu, d_losses.To(Gpu()), &d_logits_gpu,
                       GpuStream());
  EXPECT_TRUE(ParityNear(d_logits_gpu, d_logits, dt));
  // In place: the gradient overwrites the logits it is computed from.
  CrossEntropyBackward(logits_gpu, targets_gpu, lse_gpu, d_losses.To(Gpu()), &logits_gpu,
                       GpuStream());
  EXPECT_TRUE(ParityNear(logits_gpu, d_logits, dt));
}

TEST_P(CudaLossTest, PackAndScalarPathsAtOddVocabularies) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  for (const int64_t vocab : {int64_t{1}, int64_t{7}, int64_t{2048}, int64_t{32001}}) {
    SCOPED_TRACE(vocab);
    const int64_t rows = 7;
    const Tensor logits = RoundedTo(RandomNormal({rows, vocab}, 4, 4.0f), dt);
    Tensor targets = RandomInts({rows}, 5, static_cast<int32_t>(vocab));
    targets.data<int32_t>()[2] = -1;
    Tensor losses = Tensor::Zeros({rows}, DType::kF32), lse = Tensor::Zeros({rows}, DType::kF32);
    CrossEntropyForward(logits, targets, &losses, &lse, CpuStream());
    const Tensor d_losses = RandomNormal({rows}, 6);
    Tensor d_logits = Tensor::Zeros(logits.shape(), DType::kF32);
    CrossEntropyBackward(logits, targets, lse, d_losses, &d_logits, CpuStream());
    Tensor d_logits_at[2];
    for (int64_t offset : {kAligned, kUnaligned}) {
      SCOPED_TRACE(offset);
      const Tensor logits_gpu = ToGpuAt(logits, dt, offset);
      const Tensor targets_gpu = ToGpuAt(targets, DType::kI32, offset);
      Tensor losses_gpu = PoisonedAt({rows}, DType::kF32, offset);
      Tensor lse_gpu = PoisonedAt({rows}, DType::kF32, offset);
      CrossEntropyForward(logits_gpu, targets_gpu, &losses_gpu, &lse_gpu, GpuStream());
      EXPECT_TRUE(ParityNear(losses_gpu, losses, DType::kF32));
      EXPECT_TRUE(ParityNear(lse_gpu, lse, DType::kF32));
      // Backward from the CPU's lse, so both paths see the same inputs.
      d_logits_at[offset] = PoisonedAt(logits.shape(), dt, offset);
      CrossEntropyBackward(logits_gpu, targets_gpu, ToGpuAt(lse, DType::kF32, offset),
                           ToGpuAt(d_losses, DType::kF32, offset), &d_logits_at[offset],
                           GpuStream());
      EXPECT_TRUE(ParityNear(d_logits_at[offset], d_logits, dt));
    }
    EXPECT_TRUE(SameValues(d_logits_at[kAligned], d_logits_at[kUnaligned]));
  }
}

// A vocabulary of 32001 split in three uneven shards (one on the packs, two off) and an empty one:
// the partials, their merge (against the CPU's merge and the unsharded loss) and the backward.
TEST_P(CudaLossTest, VocabularyShardsMatchTheCpu) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t rows = 11, vocab = 32001;
  const int64_t bounds[] = {0, 16000, 16000, 24003, 32001};
  constexpr int kShards = 4;
  const Tensor logits = RoundedTo(RandomNormal({rows, vocab}, 20, 4.0f), dt);
  Tensor targets = RandomInts({rows}, 21, static_cast<int32_t>(vocab));
  targets.data<int32_t>()[5] = -1;
  const Tensor d_losses = RandomNormal({rows}, 22);
  Tensor all = Tensor::Empty({kShards, 3, rows}, DType::kF32);
  Tensor all_gpu = Poisoned({kShards, 3, rows}, DType::kF32);
  for (int r = 0; r < kShards; ++r) {
    SCOPED_TRACE(r);
    const Tensor shard = Columns(logits, bounds[r], bounds[r + 1]);
    Tensor partials = Tensor::Zeros({3, rows}, DType::kF32);
    CrossEntropyShardPartials(shard, targets, bounds[r], &partials, CpuStream());
    all.Slice(r, r + 1).CopyFrom(partials.Reshape({1, 3, rows}));
    for (int64_t offset : {kAligned, kUnaligned}) {
      SCOPED_TRACE(offset);
      Tensor partials_gpu = PoisonedAt({3, rows}, DType::kF32, offset);
      CrossEntropyShardPartials(ToGpuAt(shard, dt, offset), ToGpuAt(targets, DType::kI32, offset),
                                bounds[r], &partials_gpu, GpuStream());
      // Row max and target logit are exact; the sum differs by summation order.
      EXPECT_TRUE(SameValues(partials_gpu.Slice(0, 1), partials.Slice(0, 1)));
      EXPECT_TRUE(ParityNear(partials_gpu.Slice(1, 2), partials.Slice(1, 2), DType::kF32));
      EXPECT_TRUE(SameValues(partials_gpu.Slice(2, 3), partials.Slice(2, 3)));
      if (offset == kAligned) all_gpu.Slice(r, r + 1).CopyFrom(partials_gpu.Reshape({1, 3, rows}));
    }
  }
  Tensor losses = Tensor::Zeros({rows}, DType::kF32), lse = Tensor::Zeros({rows}, DType::kF32);
  CrossEntropyFromShardPartials(all, targets, &losses, &lse, CpuStream());
  Tensor full_losses = Tensor::Zeros({rows}, DType::kF32);
  Tensor full_lse = Tensor::Zeros({rows}, DType::kF32);
  CrossEntropyForward(logits, targets, &full_losses, &full_lse, CpuStream());
  EXPECT_TRUE(ParityNear(losses, full_losses, DType::kF32));
  const Tensor targets_gpu = targets.To(Gpu());
  Tensor losses_gpu = Poisoned({rows}, DType::kF32), lse_gpu = Poisoned({rows}, DType::kF32);
  CrossEntropyFromShardPartials(all_gpu, targets_gpu, &losses_gpu, &lse_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(losses_gpu, losses, DType::kF32));
  EXPECT_TRUE(ParityNear(lse_gpu, lse, DType::kF32));

  for (int r = 0; r < kShards; ++r) {
    SCOPED_TRACE(r);
    const Tensor shard = Columns(logits, bounds[r], bounds[r + 1]);
    Tensor d_shard = Tensor::Zeros(shard.shape(), DType::kF32);
    CrossEntropyShardBackward(shard, targets, bounds[r], lse, d_losses, &d_shard, CpuStream());
    Tensor d_shard_gpu = Poisoned(shard.shape(), dt);
    CrossEntropyShardBackward(ToGpu(shard, dt), targets_gpu, bounds[r], lse.To(Gpu()),
                              d_losses.To(Gpu()), &d_shard_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(d_shard_gpu, d_shard, dt));
  }
}

TEST(CudaSampleLossTest, SumsAndMeansMatchTheCpu) {
  MF_REQUIRE_GPU();
  for (const auto& [samples, seq] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {8, 4096}, {2, 1000}}) {
    SCOPED_TRACE(::testing::Message() << samples << "×" << seq);
    const Tensor losses = RandomNormal({samples * seq}, 7, 3.0f);
    Tensor targets = RandomInts({samples, seq}, 8, 5);
    for (int64_t i = 0; i < targets.numel(); ++i) {
      if (targets.data<int32_t>()[i] == 0) targets.data<int32_t>()[i] = -1;  // about 1 in 5
    }
    if (samples > 1) {  // a sample with no target at all
      for (int64_t s = 0; s < seq; ++s) targets.data<int32_t>()[seq + s] = -1;
    }
    Tensor sums = Tensor::Zeros({2, samples}, DType::kF32);
    SampleLossSums(losses, targets, &sums, CpuStream());
    Tensor sums_gpu = Poisoned({2, samples}, DType::kF32);
    SampleLossSums(losses.To(Gpu()), targets.To(Gpu()), &sums_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(sums_gpu, sums, DType::kF32));
    Tensor flat_gpu = Poisoned({2, samples}, DType::kF32);
    SampleLossSums(losses.To(Gpu()), targets.Reshape({samples * seq}).To(Gpu()), &flat_gpu,
                   GpuStream());
    EXPECT_TRUE(SameValues(flat_gpu, sums_gpu));
    // Means from the same sums: the same f32 operations in the same order, bit for bit.
    Tensor total = Tensor::FromVector({1.5f}, {1});
    AccumulateSampleMeans(sums, &total, CpuStream());
    Tensor total_gpu = Tensor::FromVector({1.5f}, {1}).To(Gpu());
    AccumulateSampleMeans(sums.To(Gpu()), &total_gpu, GpuStream());
    EXPECT_TRUE(SameValues(total_gpu, total));
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaLossTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
