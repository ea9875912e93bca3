// GPU parity of RMSNorm (plain and fused with the residual add) forward and backward against the
// CPU reference, with a hidden size that is not a multiple of the block (skips without a GPU).
#include "ops/norm.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::DTypeName;
using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

class CudaNormTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaNormTest, ForwardAndBackward) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t rows = 70, hidden = 300;
  const float eps = 1e-5f;
  const Tensor x = RoundedTo(RandomNormal({rows, hidden}, 1, 2.0f), dt);
  const Tensor w = RoundedTo(RandomNormal({hidden}, 2), dt);
  Tensor y = Tensor::Zeros(x.shape(), DType::kF32), rstd = Tensor::Zeros({rows}, DType::kF32);
  RmsNormForward(x, w, eps, &y, &rstd, CpuStream());
  Tensor y_gpu = Poisoned(x.shape(), dt), rstd_gpu = Poisoned({rows}, DType::kF32);
  const Tensor x_gpu = ToGpu(x, dt), w_gpu = ToGpu(w, dt);
  RmsNormForward(x_gpu, w_gpu, eps, &y_gpu, &rstd_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(y_gpu, y, dt));
  EXPECT_TRUE(ParityNear(rstd_gpu, rstd, DType::kF32));

  const Tensor d_y = RoundedTo(RandomNormal(x.shape(), 3), dt);
  const Tensor d_w0 = RandomNormal({hidden}, 4);
  Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32), d_w = d_w0.Clone();
  RmsNormBackward(x, w, rstd, d_y, &d_x, &d_w, CpuStream());
  Tensor d_x_gpu = Poisoned(x.shape(), dt), d_w_gpu = d_w0.To(Gpu());
  RmsNormBackward(x_gpu, w_gpu, rstd_gpu, ToGpu(d_y, dt), &d_x_gpu, &d_w_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_x_gpu, d_x, dt));
  EXPECT_TRUE(ParityNear(d_w_gpu, d_w, dt));
}

TEST_P(CudaNormTest, FusedResidualAdd) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t rows = 9, hidden = 2048;
  const Tensor x = RoundedTo(RandomNormal({rows, hidden}, 5), dt);
  const Tensor residual = RoundedTo(RandomNormal({rows, hidden}, 6), dt);
  const Tensor w = RoundedTo(RandomNormal({hidden}, 7), dt);
  Tensor sum = Tensor::Zeros(x.shape(), DType::kF32), y = Tensor::Zeros(x.shape(), DType::kF32);
  Tensor rstd = Tensor::Zeros({rows}, DType::kF32);
  AddRmsNormForward(x, residual, w, 1e-6f, &sum, &y, &rstd, CpuStream());
  Tensor sum_gpu = Poisoned(x.shape(), dt), y_gpu = Poisoned(x.shape(), dt);
  Tensor rstd_gpu = Poisoned({rows}, DType::kF32);
  AddRmsNormForward(ToGpu(x, dt), ToGpu(residual, dt), ToGpu(w, dt), 1e-6f, &sum_gpu, &y_gpu,
                    &rstd_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(sum_gpu, sum, dt));
  EXPECT_TRUE(ParityNear(y_gpu, y, dt));
  EXPECT_TRUE(ParityNear(rstd_gpu, rstd, dt));
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaNormTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
