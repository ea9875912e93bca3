// GPU parity of the element-wise ops, the reductions, SwiGLU on the fused gate/up tensor and the
// dtype conversion against the CPU references, at f32 and bf16, at aligned and unaligned views and
// odd sizes, so both the 16-byte pack path and the scalar fallback run (skips without a GPU).
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "ops/activation.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
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
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

class CudaElementwiseTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaElementwiseTest, AddAndScale) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const Tensor a = RoundedTo(RandomNormal({37, 19}, 1), dt);
  const Tensor b = RoundedTo(RandomNormal({37, 19}, 2), dt);
  Tensor sum = Tensor::Zeros(a.shape(), DType::kF32);
  Add(a, b, &sum, CpuStream());
  Tensor sum_gpu = Poisoned(a.shape(), dt);
  Add(ToGpu(a, dt), ToGpu(b, dt), &sum_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(sum_gpu, sum, dt));

  Tensor x = a.Clone();
  Tensor x_gpu = ToGpu(a, dt);
  Scale(1.5f, &x, CpuStream());
  Scale(1.5f, &x_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(x_gpu, x, dt));
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

// Element counts: one element, fewer than a pack, a multiple of every pack, a remainder of 2, and
// a large odd count.
const std::vector<int64_t> kCounts{1, 7, 2048, 2050, 100003};

TEST_P(CudaElementwiseTest, PackAndScalarPathsAgreeAtOddSizes) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  for (int64_t n : kCounts) {
    SCOPED_TRACE(n);
    const Tensor a = RoundedTo(RandomNormal({n}, 11), dt), b = RoundedTo(RandomNormal({n}, 12), dt);
    Tensor sum = Tensor::Zeros({n}, DType::kF32);
    Add(a, b, &sum, CpuStream());
    Tensor sum_at[2];
    for (int64_t offset : {kAligned, kUnaligned}) {
      sum_at[offset] = PoisonedAt({n}, dt, offset);
      Add(ToGpuAt(a, dt, offset), ToGpuAt(b, dt, offset), &sum_at[offset], GpuStream());
      EXPECT_TRUE(ParityNear(sum_at[offset], sum, dt)) << "offset " << offset;
    }
    EXPECT_TRUE(SameValues(sum_at[kAligned], sum_at[kUnaligned]));
    // In place: out aliases a.
    Tensor in_place = ToGpuAt(a, dt, kUnaligned);
    Add(in_place, ToGpuAt(b, dt, kUnaligned), &in_place, GpuStream());
    EXPECT_TRUE(SameValues(in_place, sum_at[kAligned]));

    Tensor scaled = a.Clone();
    Scale(1.5f, &scaled, CpuStream());
    Tensor scaled_at[2];
    for (int64_t offset : {kAligned, kUnaligned}) {
      scaled_at[offset] = ToGpuAt(a, dt, offset);
      Scale(1.5f, &scaled_at[offset], GpuStream());
      EXPECT_TRUE(ParityNear(scaled_at[offset], scaled, dt));
    }
    EXPECT_TRUE(SameValues(scaled_at[kAligned], scaled_at[kUnaligned]));
  }
}

// (T, F) for SwiGLU: F = 2050 and 7 leave rows (and the fused up half) off 16-byte boundaries.
const std::vector<std::pair<int64_t, int64_t>> kSwiGluShapes{
    {1, 1}, {7, 2048}, {7, 2050}, {1, 7}, {33, 704}};

TEST_P(CudaElementwiseTest, SwiGluMatchesCpuOnPackAndScalarPaths) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  for (const auto& [rows, f] : kSwiGluShapes) {
    SCOPED_TRACE(::testing::Message() << rows << "×" << f);
    const Shape shape{rows, f};
    const Tensor gate_up = RoundedTo(RandomNormal({rows, 2 * f}, 17, 3.0f), dt);
    const Tensor d_out = RoundedTo(RandomNormal(shape, 19), dt);
    Tensor out = Tensor::Zeros(shape, DType::kF32);
    SwiGluForward(gate_up, &out, CpuStream());
    Tensor d_gate_up = Tensor::Zeros({rows, 2 * f}, DType::kF32);
    SwiGluBackward(gate_up, d_out, &d_gate_up, CpuStream());
    Tensor out_at[2], d_gu_at[2];
    for (int64_t offset : {kAligned, kUnaligned}) {
      SCOPED_TRACE(offset);
      const Tensor gu = ToGpuAt(gate_up, dt, offset);
      out_at[offset] = PoisonedAt(shape, dt, offset);
      SwiGluForward(gu, &out_at[offset], GpuStream());
      EXPECT_TRUE(ParityNear(out_at[offset], out, dt));
      d_gu_at[offset] = PoisonedAt({rows, 2 * f}, dt, offset);
      SwiGluBackward(gu, ToGpuAt(d_out, dt, offset), &d_gu_at[offset], GpuStream());
      EXPECT_TRUE(ParityNear(d_gu_at[offset], d_gate_up, dt));
      // In place over gate_up.
      Tensor in_place = ToGpuAt(gate_up, dt, offset);
      SwiGluBackward(in_place, ToGpuAt(d_out, dt, offset), &in_place, GpuStream());
      EXPECT_TRUE(SameValues(in_place, d_gu_at[offset]));
    }
    // Per-element arithmetic: the pack and the scalar paths give the same bits.
    EXPECT_TRUE(SameValues(out_at[kAligned], out_at[kUnaligned]));
    EXPECT_TRUE(SameValues(d_gu_at[kAligned], d_gu_at[kUnaligned]));
  }
}

TEST_P(CudaElementwiseTest, ReductionsAtOddSizesAndUnalignedViews) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  for (int64_t n : kCounts) {
    SCOPED_TRACE(n);
    const Tensor x = RoundedTo(RandomNormal({n}, 20, 2.0f), dt);
    const double cpu = SumOfSquares(x, CpuStream());
    const float cpu_amax = Amax(x, CpuStream());
    for (int64_t offset : {kAligned, kUnaligned}) {
      SCOPED_TRACE(offset);
      const Tensor x_gpu = ToGpuAt(x, dt, offset);
      const double gpu = SumOfSquares(x_gpu, GpuStream());
      EXPECT_NEAR(gpu, cpu, 1e-9 * cpu);
      EXPECT_EQ(Amax(x_gpu, GpuStream()), cpu_amax);
      // SumOfSquaresInto: the same partials, added to acc on the device.
      Tensor acc = Tensor::Zeros({1}, DType::kI64, Gpu());
      SumOfSquaresInto(x_gpu, &acc, GpuStream());
      double into = 0;
      const Tensor acc_host = acc.To(Device::Cpu());
      std::memcpy(&into, acc_host.raw_data(), sizeof(double));
      EXPECT_EQ(into, gpu) << "0 + Σ is Σ";
      SumOfSquaresInto(x_gpu, &acc, GpuStream());
      SumOfSquaresInto(x_gpu, &acc, GpuStream());
      const Tensor acc3 = acc.To(Device::Cpu());
      std::memcpy(&into, acc3.raw_data(), sizeof(double));
      EXPECT_EQ(into, (gpu + gpu) + gpu) << "accumulated in call order";
    }
  }
}

TEST(CudaConvertTest, EveryFloatingPairMatchesTheCpuExactly) {
  MF_REQUIRE_GPU();
  const std::vector<DType> dtypes{DType::kF32, DType::kBF16, DType::kF16, DType::kFp8E4M3,
                                  DType::kFp8E5M2};
  for (int64_t n : kCounts) {
    const Tensor values = RandomNormal({n}, 21, 100.0f);
    for (DType from : dtypes) {
      const Tensor src = values.To(from);
      for (DType to : dtypes) {
        SCOPED_TRACE(::testing::Message()
                     << n << " " << moefold::DTypeName(from) << " -> " << moefold::DTypeName(to));
        const Tensor expected = src.To(to);
        for (const auto& [src_offset, dst_offset] : std::vector<std::pair<int64_t, int64_t>>{
                 {kAligned, kAligned}, {kUnaligned, kAligned}, {kAligned, kUnaligned}}) {
          const Tensor src_gpu = ToGpuAt(values, from, src_offset);
          Tensor dst_gpu = PoisonedAt({n}, to, dst_offset);
          dst_gpu.ConvertFrom(src_gpu, GpuStream());
          const Tensor back = dst_gpu.To(Device::Cpu());
          EXPECT_EQ(std::memcmp(back.raw_data(), expected.raw_data(), expected.nbytes()), 0)
              << "offsets " << src_offset << ", " << dst_offset;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaElementwiseTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
