// GPU parity of the fused AdamW step over a flat f32 buffer (three steps, weight decay) against
// the CPU reference, which follows PyTorch (skips without a GPU).
#include "ops/adamw.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::RandomNormal;

TEST(CudaAdamWTest, ThreeStepsMatchTheCpu) {
  MF_REQUIRE_GPU();
  const int64_t n = 10007;
  Tensor p = RandomNormal({n}, 1), m = Tensor::Zeros({n}, DType::kF32);
  Tensor v = Tensor::Zeros({n}, DType::kF32);
  Tensor p_gpu = p.To(Gpu()), m_gpu = m.To(Gpu()), v_gpu = v.To(Gpu());
  AdamWOptions options;
  options.lr = 3e-3f;
  options.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 3; ++step) {
    options.step = step;
    const Tensor g = RandomNormal({n}, 10 + step, 0.1f);
    AdamWStep(options, g, &p, &m, &v, CpuStream());
    AdamWStep(options, g.To(Gpu()), &p_gpu, &m_gpu, &v_gpu, GpuStream());
  }
  EXPECT_TRUE(ParityNear(p_gpu, p, DType::kF32));
  EXPECT_TRUE(ParityNear(m_gpu, m, DType::kF32));
  EXPECT_TRUE(ParityNear(v_gpu, v, DType::kF32));
}

}  // namespace
}  // namespace moefold::ops
