// GPU parity of causal GQA attention forward (out, lse) and backward (d_q, d_k, d_v) against the
// unfused CPU reference: the flash kernels (bf16, head dim 64 and 128, S % 64 == 0) and the row
// kernels (f32, other shapes) (skips without a GPU).
#include <cmath>
#include <string>

#include "ops/attention.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

struct AttentionCase {
  std::string name;
  DType dtype;
  int64_t batch, seq, q_heads, kv_heads, dim;
};

class CudaAttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(CudaAttentionTest, ForwardAndBackwardMatchTheReference) {
  MF_REQUIRE_GPU();
  const AttentionCase& c = GetParam();
  const DType dt = c.dtype;
  const Shape q_shape{c.batch, c.seq, c.q_heads, c.dim},
      kv_shape{c.batch, c.seq, c.kv_heads, c.dim};
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  const Tensor q = RoundedTo(RandomNormal(q_shape, 1), dt);
  const Tensor k = RoundedTo(RandomNormal(kv_shape, 2), dt);
  const Tensor v = RoundedTo(RandomNormal(kv_shape, 3), dt);
  const Tensor d_out = RoundedTo(RandomNormal(q_shape, 4), dt);
  const Shape lse_shape{c.batch, c.q_heads, c.seq};

  Tensor out = Tensor::Zeros(q_shape, DType::kF32), lse = Tensor::Zeros(lse_shape, DType::kF32);
  AttentionForward(q, k, v, scale, &out, &lse, CpuStream());
  const Tensor q_gpu = ToGpu(q, dt), k_gpu = ToGpu(k, dt), v_gpu = ToGpu(v, dt);
  Tensor out_gpu = Poisoned(q_shape, dt), lse_gpu = Poisoned(lse_shape, DType::kF32);
  AttentionForward(q_gpu, k_gpu, v_gpu, scale, &out_gpu, &lse_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(out_gpu, out, dt)) << "out";
  EXPECT_TRUE(ParityNear(lse_gpu, lse, dt)) << "lse";

  // Backward from each side's own forward results (the GPU saves bf16 out).
  Tensor d_q = Tensor::Zeros(q_shape, DType::kF32), d_k = Tensor::Zeros(kv_shape, DType::kF32);
  Tensor d_v = Tensor::Zeros(kv_shape, DType::kF32);
  AttentionBackward(q, k, v, out, lse, d_out, scale, &d_q, &d_k, &d_v, CpuStream());
  Tensor d_q_gpu = Poisoned(q_shape, dt), d_k_gpu = Poisoned(kv_shape, dt);
  Tensor d_v_gpu = Poisoned(kv_shape, dt);
  AttentionBackward(q_gpu, k_gpu, v_gpu, out_gpu, lse_gpu, ToGpu(d_out, dt), scale, &d_q_gpu,
                    &d_k_gpu, &d_v_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_q_gpu, d_q, dt)) << "d_q";
  EXPECT_TRUE(ParityNear(d_k_gpu, d_k, dt)) << "d_k";
  EXPECT_TRUE(ParityNear(d_v_gpu, d_v, dt)) << "d_v";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttentionTest,
    ::testing::Values(AttentionCase{"flash_d64_gqa", DType::kBF16, 2, 128, 4, 2, 64},
                      AttentionCase{"flash_d128_mqa", DType::kBF16, 1, 192, 4, 1, 128},
                      AttentionCase{"flash_d128_mha", DType::kBF16, 1, 64, 2, 2, 128},
                      AttentionCase{"rows_f32_d64", DType::kF32, 2, 64, 4, 2, 64},
                      AttentionCase{"rows_f32_odd", DType::kF32, 1, 37, 6, 3, 40},
                      AttentionCase{"rows_bf16_odd", DType::kBF16, 2, 50, 4, 4, 32}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; });

}  // namespace
}  // namespace moefold::ops
