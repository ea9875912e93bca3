// GPU parity of the expert grouped GEMM (per-expert cuBLASLt loop and cuBLAS grouped-batched,
// counts on the host or the GPU, an expert without rows) against the CPU loop (skips without a
// GPU).
#include "ops/grouped_gemm.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

struct Case {
  DType dtype;
  GroupedGemmBackend backend;
  bool counts_on_gpu;
};

class CudaGroupedGemmTest : public ::testing::TestWithParam<Case> {
 protected:
  void TearDown() override { SetGroupedGemmBackend(GroupedGemmBackend::kLoop); }
};

TEST_P(CudaGroupedGemmTest, ForwardAndBackwardMatchTheCpuLoop) {
  MF_REQUIRE_GPU();
  const auto [dt, backend, counts_on_gpu] = GetParam();
  SetGroupedGemmBackend(backend);
  const int64_t in = 32, out = 48;
  const Tensor counts = Tensor::FromVectorI32({5, 0, 17, 9}, {4});
  const int64_t rows = 31;
  const Tensor x = RoundedTo(RandomNormal({rows, in}, 1), dt);
  const Tensor w = RoundedTo(RandomNormal({4, out, in}, 2), dt);
  const Tensor counts_dev = counts_on_gpu ? counts.To(Gpu()) : counts;
  Tensor y = Tensor::Zeros({rows, out}, DType::kF32);
  GroupedLinearForward(x, w, counts, &y, CpuStream());
  Tensor y_gpu = Poisoned({rows, out}, dt);
  const Tensor x_gpu = ToGpu(x, dt), w_gpu = ToGpu(w, dt);
  GroupedLinearForward(x_gpu, w_gpu, counts_dev, &y_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(y_gpu, y, dt));

  const Tensor d_y = RoundedTo(RandomNormal({rows, out}, 3), dt);
  const Tensor d_w0 = RandomNormal(w.shape(), 4);
  Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32), d_w = d_w0.Clone();
  GroupedLinearBackward(x, w, counts, d_y, &d_x, &d_w, CpuStream());
  for (DType d_w_dt : {DType::kF32, dt}) {
    Tensor d_x_gpu = Poisoned(x.shape(), dt);
    Tensor d_w_gpu = ToGpu(RoundedTo(d_w0, d_w_dt), d_w_dt);
    GroupedLinearBackward(x_gpu, w_gpu, counts_dev, ToGpu(d_y, dt), &d_x_gpu, &d_w_gpu,
                          GpuStream());
    EXPECT_TRUE(ParityNear(d_x_gpu, d_x, dt));
    EXPECT_TRUE(ParityNear(d_w_gpu, d_w, dt)) << "d_w " << DTypeName(d_w_dt);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Backends, CudaGroupedGemmTest,
    ::testing::Values(Case{DType::kF32, GroupedGemmBackend::kLoop, false},
                      Case{DType::kBF16, GroupedGemmBackend::kLoop, true},
                      Case{DType::kF32, GroupedGemmBackend::kCublasGrouped, false},
                      Case{DType::kBF16, GroupedGemmBackend::kCublasGrouped, true}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(DTypeName(info.param.dtype)) +
             (info.param.backend == GroupedGemmBackend::kLoop ? "_loop" : "_grouped") +
             (info.param.counts_on_gpu ? "_gpu_counts" : "_host_counts");
    });

}  // namespace
}  // namespace moefold::ops
