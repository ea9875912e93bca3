// GPU parity of the fused cross entropy (ignored targets, large logits, backward in place over the
// logits) against the CPU reference (skips without a GPU).
#include "ops/loss.h"
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

INSTANTIATE_TEST_SUITE_P(DTypes, CudaLossTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
