// GPU parity of MoE token permutation: the stable counting sort (identical order and counts),
// permute/unpermute and their backwards, dropless and with dropped pairs, against the CPU
// reference (skips without a GPU).
#include <vector>

#include "ops/moe.h"
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

TEST(CudaPermutationDeathTest, OutOfRangeExpertIdIsNamed) {
  MF_REQUIRE_GPU();
  // A fresh process for the death: a forked child cannot use the parent's CUDA context.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Tensor ids = Tensor::FromVectorI32({0, 1, 2, 9}, {2, 2}).To(Gpu());
  Tensor sorted = Tensor::Empty({4}, DType::kI32, Gpu());
  Tensor counts = Tensor::Empty({4}, DType::kI32, Gpu());
  EXPECT_DEATH(ComputePermutation(ids, 4, &sorted, &counts, GpuStream()),
               "expert id 9 \\(token 1, choice 1\\) out of range");
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

INSTANTIATE_TEST_SUITE_P(DTypes, CudaPermuteTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
