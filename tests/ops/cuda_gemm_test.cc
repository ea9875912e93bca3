// GPU parity of the cuBLASLt GEMM (every transpose, alpha/beta, bf16 with bf16 or f32 output, the
// bias epilogue, the linear layer's backward) against the OpenBLAS reference (skips without a GPU).
#include "ops/gemm.h"
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

class CudaGemmTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaGemmTest, EveryTransposeWithAlphaAndBeta) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t m = 33, n = 70, k = 48;
  for (bool trans_a : {false, true}) {
    for (bool trans_b : {false, true}) {
      const Tensor a = RoundedTo(RandomNormal(trans_a ? Shape{k, m} : Shape{m, k}, 1), dt);
      const Tensor b = RoundedTo(RandomNormal(trans_b ? Shape{n, k} : Shape{k, n}, 2), dt);
      // c in a's dtype, and in f32 (how bf16 weight gradients accumulate).
      for (DType c_dt : {dt, DType::kF32}) {
        const Tensor c0 = RoundedTo(RandomNormal({m, n}, 3), c_dt);
        Tensor c = c0.Clone();
        Gemm(a, trans_a, b, trans_b, 0.7f, 0.3f, &c, CpuStream());
        Tensor c_gpu = ToGpu(c0, c_dt);
        Gemm(ToGpu(a, dt), trans_a, ToGpu(b, dt), trans_b, 0.7f, 0.3f, &c_gpu, GpuStream());
        EXPECT_TRUE(ParityNear(c_gpu, c, c_dt == DType::kF32 ? dt : c_dt))
            << "trans_a " << trans_a << " trans_b " << trans_b << " c " << moefold::DTypeName(c_dt);
        // beta = 0 ignores C's old contents, even NaN.
        Tensor fresh = Poisoned({m, n}, c_dt);
        Tensor c_beta0 = Tensor::Zeros({m, n}, DType::kF32);
        Gemm(a, trans_a, b, trans_b, 1.0f, 0.0f, &c_beta0, CpuStream());
        Gemm(ToGpu(a, dt), trans_a, ToGpu(b, dt), trans_b, 1.0f, 0.0f, &fresh, GpuStream());
        EXPECT_TRUE(ParityNear(fresh, c_beta0, c_dt == DType::kF32 ? dt : c_dt));
      }
    }
  }
}

TEST_P(CudaGemmTest, LinearWithBiasAndBackward) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const Tensor x = RoundedTo(RandomNormal({29, 64}, 4), dt);
  const Tensor w = RoundedTo(RandomNormal({40, 64}, 5), dt);
  const Tensor bias = RoundedTo(RandomNormal({40}, 6), dt);
  Tensor y = Tensor::Zeros({29, 40}, DType::kF32);
  LinearBiasForward(x, w, bias, &y, CpuStream());
  Tensor y_gpu = Poisoned({29, 40}, dt);
  const Tensor x_gpu = ToGpu(x, dt), w_gpu = ToGpu(w, dt);
  LinearBiasForward(x_gpu, w_gpu, ToGpu(bias, dt), &y_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(y_gpu, y, dt));

  const Tensor d_y = RoundedTo(RandomNormal({29, 40}, 7), dt);
  Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32);
  const Tensor d_w0 = RandomNormal(w.shape(), 8);
  Tensor d_w = d_w0.Clone();
  LinearBackward(x, w, d_y, &d_x, &d_w, CpuStream());
  Tensor d_x_gpu = Poisoned(x.shape(), dt);
  Tensor d_w_gpu = d_w0.To(Gpu());  // f32 gradient accumulator
  LinearBackward(x_gpu, w_gpu, ToGpu(d_y, dt), &d_x_gpu, &d_w_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_x_gpu, d_x, dt));
  EXPECT_TRUE(ParityNear(d_w_gpu, d_w, dt));
}

TEST(CudaGemmTest, EmptyInnerDimensionScalesC) {
  MF_REQUIRE_GPU();
  const Tensor a = Tensor::Zeros({4, 0}, DType::kF32), b = Tensor::Zeros({0, 5}, DType::kF32);
  const Tensor c0 = RandomNormal({4, 5}, 9);
  for (float beta : {0.0f, 1.0f, 0.5f}) {
    Tensor c = c0.Clone();
    Gemm(a, false, b, false, 1.0f, beta, &c, CpuStream());
    Tensor c_gpu = c0.To(Gpu());
    Gemm(a.To(Gpu()), false, b.To(Gpu()), false, 1.0f, beta, &c_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(c_gpu, c, DType::kF32)) << "beta " << beta;
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaGemmTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
