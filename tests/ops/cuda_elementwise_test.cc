// GPU parity of the element-wise ops, the reductions and SwiGLU against the CPU references, at f32
// and bf16 (skips without a GPU).
#include <cmath>
#include <limits>

#include "ops/activation.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::DTypeName;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

class CudaElementwiseTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaElementwiseTest, AddAxpyScale) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const Tensor a = RoundedTo(RandomNormal({37, 19}, 1), dt);
  const Tensor b = RoundedTo(RandomNormal({37, 19}, 2), dt);
  Tensor sum = Tensor::Zeros(a.shape(), DType::kF32);
  Add(a, b, &sum, CpuStream());
  Tensor sum_gpu = Poisoned(a.shape(), dt);
  Add(ToGpu(a, dt), ToGpu(b, dt), &sum_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(sum_gpu, sum, dt));

  for (DType dst_dt : {DType::kF32, DType::kBF16}) {
    Tensor dst = RoundedTo(RandomNormal(a.shape(), 3), dst_dt);
    Tensor dst_gpu = ToGpu(dst, dst_dt);
    Axpy(-0.75f, a, &dst, CpuStream());
    Axpy(-0.75f, ToGpu(a, dt), &dst_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(dst_gpu, dst, dst_dt)) << "dst " << moefold::DTypeName(dst_dt);
  }
  Tensor x = a.Clone();
  Tensor x_gpu = ToGpu(a, dt);
  Scale(1.5f, &x, CpuStream());
  Scale(1.5f, &x_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(x_gpu, x, dt));
}

TEST_P(CudaElementwiseTest, SwiGluForwardAndBackward) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const Shape shape{33, 70};
  const Tensor gate = RoundedTo(RandomNormal(shape, 4, 3.0f), dt);
  const Tensor up = RoundedTo(RandomNormal(shape, 5), dt);
  const Tensor d_out = RoundedTo(RandomNormal(shape, 6), dt);
  Tensor out = Tensor::Zeros(shape, DType::kF32);
  SwiGluForward(gate, up, &out, CpuStream());
  Tensor out_gpu = Poisoned(shape, dt);
  const Tensor gate_gpu = ToGpu(gate, dt), up_gpu = ToGpu(up, dt);
  SwiGluForward(gate_gpu, up_gpu, &out_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(out_gpu, out, dt));

  Tensor d_gate = Tensor::Zeros(shape, DType::kF32), d_up = Tensor::Zeros(shape, DType::kF32);
  SwiGluBackward(gate, up, d_out, &d_gate, &d_up, CpuStream());
  Tensor d_gate_gpu = Poisoned(shape, dt), d_up_gpu = Poisoned(shape, dt);
  SwiGluBackward(gate_gpu, up_gpu, ToGpu(d_out, dt), &d_gate_gpu, &d_up_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_gate_gpu, d_gate, dt));
  EXPECT_TRUE(ParityNear(d_up_gpu, d_up, dt));
  // d_out may alias d_up (read before written).
  Tensor alias = ToGpu(d_out, dt);
  Tensor d_gate2 = Poisoned(shape, dt);
  SwiGluBackward(gate_gpu, up_gpu, alias, &d_gate2, &alias, GpuStream());
  EXPECT_TRUE(ParityNear(alias, d_up, dt));
  EXPECT_TRUE(ParityNear(d_gate2, d_gate, dt));
}

TEST_P(CudaElementwiseTest, SumOfSquaresAndAmax) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const Tensor x = RoundedTo(RandomNormal({100003}, 7, 2.0f), dt);
  const Tensor x_gpu = ToGpu(x, dt);
  const double cpu = SumOfSquares(x, CpuStream());
  const double gpu = SumOfSquares(x_gpu, GpuStream());
  EXPECT_NEAR(gpu, cpu, 1e-9 * cpu);  // f64 partials: far below f32 rounding
  EXPECT_EQ(SumOfSquares(x_gpu, GpuStream()), gpu) << "deterministic";
  EXPECT_EQ(Amax(x_gpu, GpuStream()), Amax(x, CpuStream()));
  Tensor with_nan = x.Clone();
  with_nan.data<float>()[77777] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(Amax(ToGpu(with_nan, dt), GpuStream())));
}

TEST(CudaReduceTest, AmaxOfEveryFloatingDType) {
  MF_REQUIRE_GPU();
  const Tensor x = RandomNormal({5000}, 8, 50.0f);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16, DType::kFp8E4M3, DType::kFp8E5M2}) {
    const Tensor typed = x.To(dt);
    EXPECT_EQ(Amax(typed.To(::moefold::testing::Gpu()), GpuStream()), Amax(typed, CpuStream()))
        << moefold::DTypeName(dt);
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaElementwiseTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
