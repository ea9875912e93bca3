// GPU parity of RMSNorm (plain and fused with the residual add) forward and backward (overwriting
// and accumulating d_x) against the CPU reference, with hidden sizes that are and are not a
// multiple of a 16-byte pack, at aligned and unaligned views (skips without a GPU).
#include <utility>
#include <vector>

#include "ops/norm.h"
#include "tests/ops/cuda_layouts.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::kAligned;
using ::moefold::ops::testing::kUnaligned;
using ::moefold::ops::testing::PoisonedAt;
using ::moefold::ops::testing::ToGpuAt;
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

TEST_P(CudaNormTest, PackAndScalarPathsAtOddShapes) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const float eps = 1e-5f;
  for (const auto& [rows, hidden] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 2048}, {7, 2048}, {7, 2050}, {7, 1}, {1, 1}, {300, 512}}) {
    SCOPED_TRACE(::testing::Message() << rows << "×" << hidden);
    const Tensor x = RoundedTo(RandomNormal({rows, hidden}, 8, 2.0f), dt);
    const Tensor residual = RoundedTo(RandomNormal({rows, hidden}, 9), dt);
    const Tensor w = RoundedTo(RandomNormal({hidden}, 10), dt);
    const Tensor d_y = RoundedTo(RandomNormal({rows, hidden}, 11), dt);
    const Tensor d_x0 = RoundedTo(RandomNormal({rows, hidden}, 12), dt);
    const Tensor d_w0 = RandomNormal({hidden}, 13);
    Tensor y = Tensor::Zeros(x.shape(), DType::kF32), rstd = Tensor::Zeros({rows}, DType::kF32);
    RmsNormForward(x, w, eps, &y, &rstd, CpuStream());
    Tensor sum = Tensor::Zeros(x.shape(), DType::kF32),
           y_sum = Tensor::Zeros(x.shape(), DType::kF32);
    Tensor rstd_sum = Tensor::Zeros({rows}, DType::kF32);
    AddRmsNormForward(x, residual, w, eps, &sum, &y_sum, &rstd_sum, CpuStream());
    Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32), d_w = d_w0.Clone();
    RmsNormBackward(x, w, rstd, d_y, &d_x, &d_w, CpuStream());
    Tensor d_x_acc = d_x0.Clone(), d_w_acc = d_w0.Clone();
    RmsNormBackwardAccumulate(x, w, rstd, d_y, &d_x_acc, &d_w_acc, CpuStream());
    for (int64_t offset : {kAligned, kUnaligned}) {
      SCOPED_TRACE(offset);
      const Tensor x_gpu = ToGpuAt(x, dt, offset), w_gpu = ToGpuAt(w, dt, offset);
      Tensor y_gpu = PoisonedAt(x.shape(), dt, offset);
      Tensor rstd_gpu = PoisonedAt({rows}, DType::kF32, offset);
      RmsNormForward(x_gpu, w_gpu, eps, &y_gpu, &rstd_gpu, GpuStream());
      EXPECT_TRUE(ParityNear(y_gpu, y, dt));
      EXPECT_TRUE(ParityNear(rstd_gpu, rstd, DType::kF32));

      Tensor sum_gpu = PoisonedAt(x.shape(), dt, offset),
             y_sum_gpu = PoisonedAt(x.shape(), dt, offset);
      Tensor rstd_sum_gpu = PoisonedAt({rows}, DType::kF32, offset);
      AddRmsNormForward(x_gpu, ToGpuAt(residual, dt, offset), w_gpu, eps, &sum_gpu, &y_sum_gpu,
                        &rstd_sum_gpu, GpuStream());
      EXPECT_TRUE(ParityNear(sum_gpu, sum, dt));
      EXPECT_TRUE(ParityNear(y_sum_gpu, y_sum, dt));
      EXPECT_TRUE(ParityNear(rstd_sum_gpu, rstd_sum, dt));

      const Tensor d_y_gpu = ToGpuAt(d_y, dt, offset);
      const Tensor rstd_in = ToGpuAt(rstd, DType::kF32, offset);
      Tensor d_x_gpu = PoisonedAt(x.shape(), dt, offset);
      Tensor d_w_gpu = ToGpuAt(d_w0, DType::kF32, offset);
      RmsNormBackward(x_gpu, w_gpu, rstd_in, d_y_gpu, &d_x_gpu, &d_w_gpu, GpuStream());
      EXPECT_TRUE(ParityNear(d_x_gpu, d_x, dt));
      EXPECT_TRUE(ParityNear(d_w_gpu, d_w, dt));

      Tensor d_x_acc_gpu = ToGpuAt(d_x0, dt, offset);
      Tensor d_w_acc_gpu = ToGpuAt(d_w0, DType::kF32, offset);
      RmsNormBackwardAccumulate(x_gpu, w_gpu, rstd_in, d_y_gpu, &d_x_acc_gpu, &d_w_acc_gpu,
                                GpuStream());
      EXPECT_TRUE(ParityNear(d_x_acc_gpu, d_x_acc, dt));
      EXPECT_TRUE(ParityNear(d_w_acc_gpu, d_w_acc, dt));
    }
  }
}

TEST_P(CudaNormTest, BackwardIsDeterministic) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t rows = 4099, hidden = 1024;  // several d_w chunks, a partial last one
  const Tensor x = ToGpu(RoundedTo(RandomNormal({rows, hidden}, 14), dt), dt);
  const Tensor w = ToGpu(RoundedTo(RandomNormal({hidden}, 15), dt), dt);
  const Tensor d_y = ToGpu(RoundedTo(RandomNormal({rows, hidden}, 16), dt), dt);
  const Tensor rstd = ToGpu(RandomNormal({rows}, 17));
  std::vector<float> first_x, first_w;
  for (int run = 0; run < 2; ++run) {
    Tensor d_x = Poisoned({rows, hidden}, dt), d_w = Tensor::Zeros({hidden}, DType::kF32, Gpu());
    RmsNormBackward(x, w, rstd, d_y, &d_x, &d_w, GpuStream());
    if (run == 0) {
      first_x = d_x.ToVector();
      first_w = d_w.ToVector();
    } else {
      EXPECT_EQ(d_x.ToVector(), first_x);
      EXPECT_EQ(d_w.ToVector(), first_w);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaNormTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
