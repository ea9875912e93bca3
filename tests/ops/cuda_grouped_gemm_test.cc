// GPU parity of the expert grouped GEMM against the CPU loop (skips without a GPU): every backend
// × {equal counts, skewed counts with empty experts} × {f32, bf16} × {forward, d_x, d_w accumulated
// in f32 and in the input dtype}, counts on the host or the GPU, rows too narrow for the grouped
// call, and a batch without rows. Outputs start as NaN so an unwritten element fails.
#include "ops/grouped_gemm.h"

#include <string>
#include <vector>

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

struct Counts {
  const char* name;
  std::vector<int32_t> counts;
};
const Counts kEqual{"equal", {6, 6, 6, 6}};
const Counts kSkewed{"skewed", {5, 0, 17, 0, 9, 1}};

struct Case {
  DType dtype;
  GroupedGemmBackend backend;
  Counts counts;
  bool counts_on_gpu = false;
  int64_t in = 64, out = 96;  // out stands for a fused gate/up width (2·F)
};

class CudaGroupedGemmTest : public ::testing::TestWithParam<Case> {
 protected:
  void TearDown() override { SetGroupedGemmBackend(GroupedGemmBackend::kAuto); }
};

TEST_P(CudaGroupedGemmTest, ForwardDxAndDwMatchTheCpuLoop) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  const DType dt = c.dtype;
  SetGroupedGemmBackend(c.backend);
  const int64_t experts = static_cast<int64_t>(c.counts.counts.size());
  int64_t rows = 0;
  for (int32_t n : c.counts.counts) rows += n;
  const Tensor counts = Tensor::FromVectorI32(c.counts.counts, {experts});
  const Tensor counts_dev = c.counts_on_gpu ? counts.To(Gpu()) : counts;
  const Tensor x = RoundedTo(RandomNormal({rows, c.in}, 1), dt);
  const Tensor w = RoundedTo(RandomNormal({experts, c.out, c.in}, 2), dt);
  const Tensor x_gpu = ToGpu(x, dt), w_gpu = ToGpu(w, dt);

  Tensor y = Tensor::Zeros({rows, c.out}, DType::kF32);
  GroupedLinearForward(x, w, counts, &y, CpuStream());
  Tensor y_gpu = Poisoned({rows, c.out}, dt);
  GroupedLinearForward(x_gpu, w_gpu, counts_dev, &y_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(y_gpu, y, dt)) << "forward";

  const Tensor d_y = RoundedTo(RandomNormal({rows, c.out}, 3), dt);
  const Tensor d_y_gpu = ToGpu(d_y, dt);
  const Tensor d_w0 = RandomNormal(w.shape(), 4);
  Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32), d_w = d_w0.Clone();
  GroupedLinearBackward(x, w, counts, d_y, &d_x, &d_w, CpuStream());
  // d_w accumulates in f32 (how training keeps weight gradients) and in the input dtype; an
  // expert without rows keeps its old gradient.
  for (DType d_w_dt : {DType::kF32, dt}) {
    Tensor d_x_gpu = Poisoned(x.shape(), dt);
    Tensor d_w_gpu = ToGpu(RoundedTo(d_w0, d_w_dt), d_w_dt);
    GroupedLinearBackward(x_gpu, w_gpu, counts_dev, d_y_gpu, &d_x_gpu, &d_w_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(d_x_gpu, d_x, dt)) << "d_x";
    EXPECT_TRUE(ParityNear(d_w_gpu, d_w, d_w_dt == DType::kF32 ? dt : d_w_dt))
        << "d_w " << DTypeName(d_w_dt);
  }
  // d_x alone and d_w alone (the other gradient not asked for).
  Tensor d_x_only = Poisoned(x.shape(), dt);
  GroupedLinearBackward(x_gpu, w_gpu, counts_dev, d_y_gpu, &d_x_only, nullptr, GpuStream());
  EXPECT_TRUE(ParityNear(d_x_only, d_x, dt)) << "d_x without d_w";
  Tensor d_w_only = d_w0.To(Gpu());
  GroupedLinearBackward(x_gpu, w_gpu, counts_dev, d_y_gpu, nullptr, &d_w_only, GpuStream());
  EXPECT_TRUE(ParityNear(d_w_only, d_w, dt)) << "d_w without d_x";
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (GroupedGemmBackend b :
         {GroupedGemmBackend::kAuto, GroupedGemmBackend::kLoop, GroupedGemmBackend::kCublasGrouped,
          GroupedGemmBackend::kBatched}) {
      for (const Counts& counts : {kEqual, kSkewed}) cases.push_back(Case{dt, b, counts});
    }
    // Counts still on the GPU (copied back first).
    cases.push_back(Case{dt, GroupedGemmBackend::kAuto, kSkewed, /*counts_on_gpu=*/true});
    // Rows of 33 bf16 elements are not 16-byte aligned: the grouped call steps aside for the loop.
    cases.push_back(Case{dt, GroupedGemmBackend::kCublasGrouped, kSkewed, false, 33, 40});
    cases.push_back(Case{dt, GroupedGemmBackend::kBatched, kEqual, false, 33, 40});
  }
  // One expert: the batch of one.
  cases.push_back(Case{DType::kBF16, GroupedGemmBackend::kBatched, Counts{"single", {7}}});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Backends, CudaGroupedGemmTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           const Case& c = info.param;
                           return std::string(DTypeName(c.dtype)) + "_" +
                                  GroupedGemmBackendName(c.backend) + "_" + c.counts.name +
                                  (c.counts_on_gpu ? "_gpu_counts" : "") + "_" +
                                  std::to_string(c.in) + "x" + std::to_string(c.out);
                         });

// Experts without any rows: nothing to write, and every d_w keeps its value.
TEST(CudaGroupedGemmEmptyTest, NoRowsLeaveTheGradientAlone) {
  MF_REQUIRE_GPU();
  const Tensor counts = Tensor::FromVectorI32({0, 0, 0}, {3});
  const Tensor x = Tensor::Zeros({0, 16}, DType::kBF16, Gpu());
  const Tensor w = ToGpu(RandomNormal({3, 8, 16}, 5), DType::kBF16);
  const Tensor d_y = Tensor::Zeros({0, 8}, DType::kBF16, Gpu());
  const Tensor d_w0 = RandomNormal(w.shape(), 6);
  for (GroupedGemmBackend b : {GroupedGemmBackend::kAuto, GroupedGemmBackend::kLoop,
                               GroupedGemmBackend::kCublasGrouped, GroupedGemmBackend::kBatched}) {
    SetGroupedGemmBackend(b);
    Tensor y = Tensor::Zeros({0, 8}, DType::kBF16, Gpu());
    GroupedLinearForward(x, w, counts, &y, GpuStream());
    Tensor d_x = Tensor::Zeros({0, 16}, DType::kBF16, Gpu());
    Tensor d_w = d_w0.To(Gpu());
    GroupedLinearBackward(x, w, counts, d_y, &d_x, &d_w, GpuStream());
    EXPECT_TRUE(ParityNear(d_w, d_w0, DType::kF32)) << GroupedGemmBackendName(b);
  }
  SetGroupedGemmBackend(GroupedGemmBackend::kAuto);
}

}  // namespace
}  // namespace moefold::ops
