// GPU parity of MoE token permutation: the stable counting sort (identical order and counts), the
// capacity selection of both drop policies (identical, ties included),
// permute/unpermute and their backwards, dropless and with dropped pairs, at hidden sizes on and
// off the 16-byte packs and at unaligned views, the per-unit expert counts, and the traps on bad
// ids, against the CPU reference (skips without a GPU).
#include <tuple>
#include <utility>
#include <vector>

#include "ops/moe.h"
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

TEST(CudaPermutationTest, StableCountingSortMatchesTheCpuExactly) {
  MF_REQUIRE_GPU();
  for (const auto& [tokens, k, experts] :
       std::vector<std::tuple<int64_t, int, int>>{{37, 2, 8}, {3000, 8, 64}, {5, 1, 3}}) {
    const Tensor ids = RandomInts({tokens, k}, 1, experts);
    Tensor sorted = Tensor::Zeros({tokens * k}, DType::kI32);
    Tensor counts = Tensor::Zeros({experts}, DType::kI32);
    ComputePermutation(ids, experts, &sorted, &counts, CpuStream());
    Tensor sorted_gpu = Poisoned({tokens * k}, DType::kI32);
    Tensor counts_gpu = Poisoned({experts}, DType::kI32);
    ComputePermutation(ids.To(Gpu()), experts, &sorted_gpu, &counts_gpu, GpuStream());
    EXPECT_EQ(sorted_gpu.ToVector(), sorted.ToVector()) << tokens << "×" << k;
    EXPECT_EQ(counts_gpu.ToVector(), counts.ToVector()) << tokens << "×" << k;
  }
}

// A bad expert id traps the kernel; no host wait happens inside the op. The printed id goes to the
// device's printf buffer (stdout), which a trapped context does not reliably flush, so the test
// asserts the failure the next synchronisation reports.
TEST(CudaPermutationDeathTest, OutOfRangeExpertIdTrapsTheKernel) {
  MF_REQUIRE_GPU();
  // A fresh process for the death: a forked child cannot use the parent's CUDA context.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor ids = Tensor::FromVectorI32({0, 1, 2, 9}, {2, 2}).To(Gpu());
  Tensor sorted = Tensor::Empty({4}, DType::kI32, Gpu());
  Tensor counts = Tensor::Empty({4}, DType::kI32, Gpu());
  EXPECT_DEATH(
      {
        ComputePermutation(ids, 4, &sorted, &counts, GpuStream());
        GpuStream().Synchronize();
      },
      "failed at");
  Tensor unit_counts = Tensor::Empty({1, 4}, DType::kF32, Gpu());
  EXPECT_DEATH(
      {
        CountExpertsPerUnit(ids, 0, 2, &unit_counts, GpuStream());
        GpuStream().Synchronize();
      },
      "failed at");
}

TEST(CudaCountExpertsPerUnitTest, MatchesTheCpuExactly) {
  MF_REQUIRE_GPU();
  // (tokens, k, experts, first_row, unit_rows, units): one unit; several; an offset slice of a
  // larger batch with empty leading units; units of more than one block's pairs (split path).
  for (const auto& [tokens, k, experts, first_row, unit_rows, units] :
       std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>>{
           {37, 2, 8, 0, 37, 1},
           {64, 8, 64, 0, 16, 4},
           {50, 3, 5, 70, 20, 7},
           {9000, 4, 64, 0, 4500, 2},
           {20000, 8, 160, 100, 30000, 1},
           {1, 1, 3, 5, 2, 3}}) {
    SCOPED_TRACE(::testing::Message() << tokens << "×" << k << " E=" << experts << " from "
                                      << first_row << " by " << unit_rows);
    const Tensor ids = RandomInts({tokens, k}, 8, static_cast<int32_t>(experts));
    Tensor counts = Tensor::Zeros({units, experts}, DType::kF32);
    CountExpertsPerUnit(ids, first_row, unit_rows, &counts, CpuStream());
    Tensor counts_gpu = Poisoned({units, experts}, DType::kF32);
    CountExpertsPerUnit(ids.To(Gpu()), first_row, unit_rows, &counts_gpu, GpuStream());
    EXPECT_EQ(counts_gpu.ToVector(), counts.ToVector());
  }
}

TEST(CudaCapacityPermutationTest, MatchesTheCpuExactly) {
  MF_REQUIRE_GPU();
  // (tokens, k, experts, capacity): crowded experts with tied weights, one expert over capacity
  // by thousands (several ranking blocks), capacity 0, a capacity nothing reaches, no tokens.
  for (const auto& [tokens, k, experts, capacity] :
       std::vector<std::tuple<int64_t, int, int, int64_t>>{
           {37, 2, 8, 5}, {3000, 8, 64, 300}, {5000, 1, 2, 7}, {40, 2, 4, 0}, {40, 2, 4, 80},
           {0, 2, 4, 3}}) {
    SCOPED_TRACE(::testing::Message() << tokens << "×" << k << " E=" << experts << " C="
                                      << capacity);
    const Tensor ids = RandomInts({tokens, k}, 15, experts);
    // Weights on a grid of 16 values: many ties, which the earlier pair must win.
    Tensor weights = RandomInts({tokens, k}, 16, 16).To(DType::kF32);
    for (DropPolicy policy : {DropPolicy::kProbs, DropPolicy::kPosition}) {
      Tensor sorted = Tensor::Zeros({tokens * k}, DType::kI32);
      Tensor counts = Tensor::Zeros({experts}, DType::kI32);
      Tensor demand = Tensor::Zeros({experts}, DType::kI32);
      ComputeCapacityPermutation(ids, weights, experts, capacity, policy, &sorted, &counts,
                                 &demand, CpuStream());
      Tensor sorted_gpu = Poisoned({tokens * k}, DType::kI32);
      Tensor both_gpu = Poisoned({2 * experts}, DType::kI32);  // counts, demand: one tensor
      Tensor counts_gpu = both_gpu.Slice(0, experts);
      Tensor demand_gpu = both_gpu.Slice(experts, 2 * experts);
      ComputeCapacityPermutation(ids.To(Gpu()), weights.To(Gpu()), experts, capacity, policy,
                                 &sorted_gpu, &counts_gpu, &demand_gpu, GpuStream());
      EXPECT_EQ(sorted_gpu.ToVector(), sorted.ToVector());
      EXPECT_EQ(counts_gpu.ToVector(), counts.ToVector());
      EXPECT_EQ(demand_gpu.ToVector(), demand.ToVector());
    }
  }
}

class CudaPermuteTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaPermuteTest, PermuteUnpermuteAndBackwards) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t tokens = 23, hidden = 96;
  const int k = 2, experts = 4;
  const Tensor ids = RandomInts({tokens, k}, 2, experts);
  Tensor full = Tensor::Zeros({tokens * k}, DType::kI32);
  Tensor counts = Tensor::Zeros({experts}, DType::kI32);
  ComputePermutation(ids, experts, &full, &counts, CpuStream());
  // Dropless, and with every third pair dropped (capacity mode).
  std::vector<int32_t> kept;
  for (int64_t r = 0; r < full.numel(); ++r) {
    if (r % 3 != 1) kept.push_back(full.data<int32_t>()[r]);
  }
  for (const Tensor& sorted :
       {full, Tensor::FromVectorI32(kept, {static_cast<int64_t>(kept.size())})}) {
    const int64_t rows = sorted.numel();
    const Tensor sorted_gpu = sorted.To(Gpu());
    const Tensor x = RoundedTo(RandomNormal({tokens, hidden}, 3), dt);
    Tensor out = Tensor::Zeros({rows, hidden}, DType::kF32);
    PermuteTokens(x, sorted, k, &out, CpuStream());
    Tensor out_gpu = Poisoned({rows, hidden}, dt);
    PermuteTokens(ToGpu(x, dt), sorted_gpu, k, &out_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(out_gpu, out, DType::kF32)) << "a gather is exact";

    const Tensor d_out = RoundedTo(RandomNormal({rows, hidden}, 4), dt);
    Tensor d_x = Tensor::Zeros({tokens, hidden}, DType::kF32);
    PermuteTokensBackward(d_out, sorted, k, &d_x, CpuStream());
    Tensor d_x_gpu = Poisoned({tokens, hidden}, dt);
    PermuteTokensBackward(ToGpu(d_out, dt), sorted_gpu, k, &d_x_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(d_x_gpu, d_x, dt));

    const Tensor y = RoundedTo(RandomNormal({rows, hidden}, 5), dt);
    const Tensor weights = RandomNormal({tokens, k}, 6);
    Tensor combined = Tensor::Zeros({tokens, hidden}, DType::kF32);
    UnpermuteTokens(y, sorted, weights, &combined, CpuStream());
    Tensor combined_gpu = Poisoned({tokens, hidden}, dt);
    const Tensor y_gpu = ToGpu(y, dt), weights_gpu = weights.To(Gpu());
    UnpermuteTokens(y_gpu, sorted_gpu, weights_gpu, &combined_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(combined_gpu, combined, dt));

    const Tensor d_combined = RoundedTo(RandomNormal({tokens, hidden}, 7), dt);
    Tensor d_y = Tensor::Zeros({rows, hidden}, DType::kF32);
    Tensor d_weights = Tensor::Zeros({tokens, k}, DType::kF32);
    UnpermuteTokensBackward(d_combined, y, sorted, weights, &d_y, &d_weights, CpuStream());
    Tensor d_y_gpu = Poisoned({rows, hidden}, dt);
    Tensor d_weights_gpu = Poisoned({tokens, k}, DType::kF32);
    UnpermuteTokensBackward(ToGpu(d_combined, dt), y_gpu, sorted_gpu, weights_gpu, &d_y_gpu,
                            &d_weights_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(d_y_gpu, d_y, dt));
    EXPECT_TRUE(ParityNear(d_weights_gpu, d_weights, dt));
  }
}

TEST_P(CudaPermuteTest, PackAndScalarPathsAtOddShapes) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int k = 2, experts = 3;
  for (const auto& [tokens, hidden] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 2048}, {7, 2048}, {7, 2050}, {7, 1}, {40, 72}}) {
    SCOPED_TRACE(::testing::Message() << tokens << "×" << hidden);
    const Tensor ids = RandomInts({tokens, k}, 9, experts);
    Tensor sorted = Tensor::Zeros({tokens * k}, DType::kI32);
    Tensor counts = Tensor::Zeros({experts}, DType::kI32);
    ComputePermutation(ids, experts, &sorted, &counts, CpuStream());
    const int64_t rows = sorted.numel();
    const Tensor x = RoundedTo(RandomNormal({tokens, hidden}, 10), dt);
    const Tensor y = RoundedTo(RandomNormal({rows, hidden}, 11), dt);
    const Tensor weights = RandomNormal({tokens, k}, 12);
    const Tensor d_rows = RoundedTo(RandomNormal({rows, hidden}, 13), dt);
    const Tensor d_tokens = RoundedTo(RandomNormal({tokens, hidden}, 14), dt);
    Tensor out = Tensor::Zeros({rows, hidden}, DType::kF32);
    PermuteTokens(x, sorted, k, &out, CpuStream());
    Tensor d_x = Tensor::Zeros({tokens, hidden}, DType::kF32);
    PermuteTokensBackward(d_rows, sorted, k, &d_x, CpuStream());
    Tensor combined = Tensor::Zeros({tokens, hidden}, DType::kF32);
    UnpermuteTokens(y, sorted, weights, &combined, CpuStream());
    Tensor d_y = Tensor::Zeros({rows, hidden}, DType::kF32);
    Tensor d_weights = Tensor::Zeros({tokens, k}, DType::kF32);
    UnpermuteTokensBackward(d_tokens, y, sorted, weights, &d_y, &d_weights, CpuStream());

    Tensor combined_at[2], d_x_at[2], d_y_at[2];
    for (int64_t offset : {kAligned, kUnaligned}) {
      SCOPED_TRACE(offset);
      const Tensor sorted_gpu = ToGpuAt(sorted, DType::kI32, offset);
      const Tensor weights_gpu = ToGpuAt(weights, DType::kF32, offset);
      const Tensor y_gpu = ToGpuAt(y, dt, offset);
      Tensor out_gpu = PoisonedAt({rows, hidden}, dt, offset);
      PermuteTokens(ToGpuAt(x, dt, offset), sorted_gpu, k, &out_gpu, GpuStream());
      EXPECT_TRUE(SameValues(out_gpu, ToGpu(out, dt))) << "a gather is exact";
      d_x_at[offset] = PoisonedAt({tokens, hidden}, dt, offset);
      PermuteTokensBackward(ToGpuAt(d_rows, dt, offset), sorted_gpu, k, &d_x_at[offset],
                            GpuStream());
      EXPECT_TRUE(ParityNear(d_x_at[offset], d_x, dt));
      combined_at[offset] = PoisonedAt({tokens, hidden}, dt, offset);
      UnpermuteTokens(y_gpu, sorted_gpu, weights_gpu, &combined_at[offset], GpuStream());
      EXPECT_TRUE(ParityNear(combined_at[offset], combined, dt));
      d_y_at[offset] = PoisonedAt({rows, hidden}, dt, offset);
      Tensor d_weights_gpu = PoisonedAt({tokens, k}, DType::kF32, offset);
      UnpermuteTokensBackward(ToGpuAt(d_tokens, dt, offset), y_gpu, sorted_gpu, weights_gpu,
                              &d_y_at[offset], &d_weights_gpu, GpuStream());
      EXPECT_TRUE(ParityNear(d_y_at[offset], d_y, dt));
      EXPECT_TRUE(ParityNear(d_weights_gpu, d_weights, dt));
    }
    // The gather-sums and d_y are per element (a fixed choice order): both paths agree exactly.
    EXPECT_TRUE(SameValues(d_x_at[kAligned], d_x_at[kUnaligned]));
    EXPECT_TRUE(SameValues(combined_at[kAligned], combined_at[kUnaligned]));
    EXPECT_TRUE(SameValues(d_y_at[kAligned], d_y_at[kUnaligned]));
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaPermuteTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
