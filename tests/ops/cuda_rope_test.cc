// GPU parity of rotary embedding against the CPU reference (skips without a GPU): RopeForward and
// RopeBackward (in place) and the fused QKV split, the CPU's bits exactly (same table factors, no
// contraction), on the 16-byte path (D = 128), the scalar path (D = 6) and a misaligned view.
#include <string>

#include "ops/rope.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::DTypeName;
using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

class CudaRopeTest : public ::testing::TestWithParam<DType> {};

// A (T, N, D) view whose data starts one element into its storage (not 16-byte aligned).
Tensor Misaligned(const Tensor& host, DType dtype) {
  Tensor flat = Tensor::Zeros({host.numel() + 1}, dtype, Gpu());
  Tensor view = flat.Slice(1, host.numel() + 1).Reshape(host.shape());
  view.CopyFrom(host.To(dtype));
  return view;
}

TEST_P(CudaRopeTest, ForwardAndBackwardOnVectorScalarAndMisalignedPaths) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  for (const Shape& shape : {Shape{9, 3, 128}, Shape{7, 5, 6}, Shape{1, 1, 16}}) {
    for (bool misaligned : {false, true}) {
      SCOPED_TRACE(ShapeToString(shape) + (misaligned ? " misaligned" : ""));
      const Tensor x = RoundedTo(RandomNormal(shape, 3), dt);
      const Tensor positions = RandomInts({shape[0]}, 4, 4096);
      const Tensor table = RopeTable(4096, shape[2], 500000.0f);
      const Tensor table_gpu = table.To(Gpu()), pos_gpu = positions.To(Gpu());
      Tensor y = Tensor::Zeros(shape, DType::kF32), d_x = y.Clone();
      RopeForward(x, positions, table, &y, CpuStream());
      RopeBackward(x, positions, table, &d_x, CpuStream());
      const Tensor x_gpu = misaligned ? Misaligned(x, dt) : ToGpu(x, dt);
      Tensor y_gpu = Poisoned(shape, dt);
      RopeForward(x_gpu, pos_gpu, table_gpu, &y_gpu, GpuStream());
      EXPECT_EQ(y_gpu.ToVector(), RoundedTo(y, dt).ToVector());
      Tensor in_place = misaligned ? Misaligned(x, dt) : ToGpu(x, dt);
      RopeBackward(in_place, pos_gpu, table_gpu, &in_place, GpuStream());
      EXPECT_EQ(in_place.ToVector(), RoundedTo(d_x, dt).ToVector());
    }
  }
}

// Fused QKV with G groups of r query heads of dim D, T tokens.
struct QkvCase {
  int64_t tokens, groups, r, dim;
};

TEST_P(CudaRopeTest, QkvSplitForwardAndBackward) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  for (const QkvCase& c :
       {QkvCase{13, 4, 4, 128}, QkvCase{5, 2, 3, 64}, QkvCase{6, 3, 1, 6}, QkvCase{1, 1, 2, 16}}) {
    for (bool misaligned : {false, true}) {
      SCOPED_TRACE(std::to_string(c.dim) + (misaligned ? " misaligned" : ""));
      const Shape fused{c.tokens, c.groups * (c.r + 2) * c.dim};
      const Shape q_shape{c.tokens, c.groups * c.r, c.dim}, kv_shape{c.tokens, c.groups, c.dim};
      const Tensor qkv = RoundedTo(RandomNormal(fused, 5), dt);
      const Tensor positions = RandomInts({c.tokens}, 6, 2048);
      const Tensor table = RopeTable(2048, c.dim, 10000.0f);
      const Tensor table_gpu = table.To(Gpu()), pos_gpu = positions.To(Gpu());
      Tensor q = Tensor::Zeros(q_shape, DType::kF32), k = Tensor::Zeros(kv_shape, DType::kF32),
             v = Tensor::Zeros(kv_shape, DType::kF32);
      QkvRopeForward(qkv, positions, table, &q, &k, &v, CpuStream());
      Tensor q_gpu = Poisoned(q_shape, dt), k_gpu = Poisoned(kv_shape, dt),
             v_gpu = Poisoned(kv_shape, dt);
      const Tensor qkv_gpu = misaligned ? Misaligned(qkv, dt) : ToGpu(qkv, dt);
      QkvRopeForward(qkv_gpu, pos_gpu, table_gpu, &q_gpu, &k_gpu, &v_gpu, GpuStream());
      EXPECT_EQ(q_gpu.ToVector(), RoundedTo(q, dt).ToVector());
      EXPECT_EQ(k_gpu.ToVector(), RoundedTo(k, dt).ToVector());
      EXPECT_EQ(v_gpu.ToVector(), RoundedTo(v, dt).ToVector());  // a copy

      const Tensor d_q = RoundedTo(RandomNormal(q_shape, 7), dt);
      const Tensor d_k = RoundedTo(RandomNormal(kv_shape, 8), dt);
      const Tensor d_v = RoundedTo(RandomNormal(kv_shape, 9), dt);
      Tensor d_qkv = Tensor::Zeros(fused, DType::kF32);
      QkvRopeBackward(d_q, d_k, d_v, positions, table, &d_qkv, CpuStream());
      Tensor d_qkv_gpu =
          misaligned ? Misaligned(Tensor::Zeros(fused, DType::kF32), dt) : Poisoned(fused, dt);
      QkvRopeBackward(ToGpu(d_q, dt), ToGpu(d_k, dt), ToGpu(d_v, dt), pos_gpu, table_gpu,
                      &d_qkv_gpu, GpuStream());
      EXPECT_EQ(d_qkv_gpu.ToVector(), RoundedTo(d_qkv, dt).ToVector());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaRopeTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
