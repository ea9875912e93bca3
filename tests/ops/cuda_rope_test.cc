// GPU parity of rotary embedding forward and backward (long positions, in place) against the CPU
// reference (skips without a GPU).
#include "ops/rope.h"
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

class CudaRopeTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaRopeTest, ForwardBackwardAndInPlace) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const Shape shape{9, 3, 128};
  const float theta = 10000.0f;
  const Tensor x = RoundedTo(RandomNormal(shape, 1), dt);
  const Tensor positions = RandomInts({9}, 2, 65536);
  Tensor y = Tensor::Zeros(shape, DType::kF32);
  RopeForward(x, positions, theta, &y, CpuStream());
  Tensor y_gpu = Poisoned(shape, dt);
  const Tensor pos_gpu = positions.To(Gpu());
  RopeForward(ToGpu(x, dt), pos_gpu, theta, &y_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(y_gpu, y, dt));

  Tensor d_x = Tensor::Zeros(shape, DType::kF32);
  RopeBackward(x, positions, theta, &d_x, CpuStream());
  Tensor in_place = ToGpu(x, dt);
  RopeBackward(in_place, pos_gpu, theta, &in_place, GpuStream());
  EXPECT_TRUE(ParityNear(in_place, d_x, dt));
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaRopeTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
