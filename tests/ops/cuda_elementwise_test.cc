// GPU parity of the element-wise ops, the reductions, SwiGLU (separate and fused gate/up) and the
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
using ::moefold::testing::ToHostF32;

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

    for (DType dst_dt : {DType::kF32, DType::kBF16}) {
      const Tensor dst0 = RoundedTo(RandomNormal({n}, 13), dst_dt);
      Tensor dst = dst0.Clone();
      Axpy(-0.75f, a, &dst, CpuStream());
      Tensor dst_at[2];
      for (int64_t offset : {kAligned, kUnaligned}) {
        dst_at[offset] = ToGpuAt(dst0, dst_dt, offset);
        Axpy(-0.75f, ToGpuAt(a, dt, offset), &dst_at[offset], GpuStream());
        EXPECT_TRUE(ParityNear(dst_at[offset], dst, dst_dt))
            << "dst " << moefold::DTypeName(dst_dt) << " offset " << offset;
      }
      EXPECT_TRUE(SameValues(dst_at[kAligned], dst_at[kUnaligned]));
      // Source aligned, destination not: the scalar path for the pair.
      Tensor mixed = ToGpuAt(dst0, dst_dt, kUnaligned);
      Axpy(-0.75f, ToGpuAt(a, dt, kAligned), &mixed, GpuStream());
      EXPECT_TRUE(SameValues(mixed, dst_at[kAligned]));
    }

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

TEST_P(CudaElementwiseTest, SwiGluPackAndScalarPathsAgree) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  for (const auto& [rows, f] : kSwiGluShapes) {
    SCOPED_TRACE(::testing::Message() << rows << "×" << f);
    const Shape shape{rows, f};
    const Tensor gate = RoundedTo(RandomNormal(shape, 14, 3.0f), dt);
    const Tensor up = RoundedTo(RandomNormal(shape, 15), dt);
    const Tensor d_out = RoundedTo(RandomNormal(shape, 16), dt);
    Tensor out = Tensor::Zeros(shape, DType::kF32);
    SwiGluForward(gate, up, &out, CpuStream());
    Tensor d_gate = Tensor::Zeros(shape, DType::kF32), d_up = Tensor::Zeros(shape, DType::kF32);
    SwiGluBackward(gate, up, d_out, &d_gate, &d_up, CpuStream());
    Tensor out_at[2], d_gate_at[2], d_up_at[2];
    for (int64_t offset : {kAligned, kUnaligned}) {
      const Tensor g = ToGpuAt(gate, dt, offset), u = ToGpuAt(up, dt, offset);
      out_at[offset] = PoisonedAt(shape, dt, offset);
      SwiGluForward(g, u, &out_at[offset], GpuStream());
      EXPECT_TRUE(ParityNear(out_at[offset], out, dt));
      d_gate_at[offset] = PoisonedAt(shape, dt, offset);
      d_up_at[offset] = PoisonedAt(shape, dt, offset);
      SwiGluBackward(g, u, ToGpuAt(d_out, dt, offset), &d_gate_at[offset], &d_up_at[offset],
                     GpuStream());
      EXPECT_TRUE(ParityNear(d_gate_at[offset], d_gate, dt));
      EXPECT_TRUE(ParityNear(d_up_at[offset], d_up, dt));
    }
    EXPECT_TRUE(SameValues(out_at[kAligned], out_at[kUnaligned]));
    EXPECT_TRUE(SameValues(d_gate_at[kAligned], d_gate_at[kUnaligned]));
    EXPECT_TRUE(SameValues(d_up_at[kAligned], d_up_at[kUnaligned]));
  }
}

// gate_up (rows, 2F): gate's columns, then up's.
Tensor Fuse(const Tensor& gate, const Tensor& up) {
  const int64_t rows = gate.dim(0), f = gate.dim(1);
  Tensor gate_up = Tensor::Zeros({rows, 2 * f}, DType::kF32);
  for (int64_t t = 0; t < rows; ++t) {
    std::memcpy(gate_up.data<float>() + t * 2 * f, gate.data<float>() + t * f, sizeof(float) * f);
    std::memcpy(gate_up.data<float>() + t * 2 * f + f, up.data<float>() + t * f, sizeof(float) * f);
  }
  return gate_up;
}

TEST_P(CudaElementwiseTest, FusedSwiGluMatchesCpuAndTheTwoTensorKernels) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  for (const auto& [rows, f] : kSwiGluShapes) {
    SCOPED_TRACE(::testing::Message() << rows << "×" << f);
    const Shape shape{rows, f};
    const Tensor gate = RoundedTo(RandomNormal(shape, 17, 3.0f), dt);
    const Tensor up = RoundedTo(RandomNormal(shape, 18), dt);
    const Tensor d_out = RoundedTo(RandomNormal(shape, 19), dt);
    const Tensor gate_up = Fuse(gate, up);
    Tensor out = Tensor::Zeros(shape, DType::kF32);
    SwiGluForward(gate_up, &out, CpuStream());
    Tensor d_gate_up = Tensor::Zeros({rows, 2 * f}, DType::kF32);
    SwiGluBackward(gate_up, d_out, &d_gate_up, CpuStream());
    // The two-tensor kernels on the same values: per-element arithmetic, identical results.
    Tensor out2 = PoisonedAt(shape, dt, kAligned);
    Tensor d_gate2 = PoisonedAt(shape, dt, kAligned), d_up2 = PoisonedAt(shape, dt, kAligned);
    SwiGluForward(ToGpuAt(gate, dt, kAligned), ToGpuAt(up, dt, kAligned), &out2, GpuStream());
    SwiGluBackward(ToGpuAt(gate, dt, kAligned), ToGpuAt(up, dt, kAligned),
                   ToGpuAt(d_out, dt, kAligned), &d_gate2, &d_up2, GpuStream());
    const Tensor d_gate_up2 = ToGpuAt(Fuse(ToHostF32(d_gate2), ToHostF32(d_up2)), dt, kAligned);
    for (int64_t offset : {kAligned, kUnaligned}) {
      SCOPED_TRACE(offset);
      const Tensor gu = ToGpuAt(gate_up, dt, offset);
      Tensor out_gpu = PoisonedAt(shape, dt, offset);
      SwiGluForward(gu, &out_gpu, GpuStream());
      EXPECT_TRUE(ParityNear(out_gpu, out, dt));
      EXPECT_TRUE(SameValues(out_gpu, out2));
      Tensor d_gu = PoisonedAt({rows, 2 * f}, dt, offset);
      SwiGluBackward(gu, ToGpuAt(d_out, dt, offset), &d_gu, GpuStream());
      EXPECT_TRUE(ParityNear(d_gu, d_gate_up, dt));
      EXPECT_TRUE(SameValues(d_gu, d_gate_up2));
      // In place over gate_up.
      Tensor in_place = ToGpuAt(gate_up, dt, offset);
      SwiGluBackward(in_place, ToGpuAt(d_out, dt, offset), &in_place, GpuStream());
      EXPECT_TRUE(SameValues(in_place, d_gu));
    }
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
