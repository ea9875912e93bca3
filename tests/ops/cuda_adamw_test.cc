// GPU parity of the fused AdamW steps against the CPU reference, which follows PyTorch (skips
// without a GPU): the per-parameter step (three steps, weight decay), the flat step (equal bit for
// bit to the per-parameter kernel on the scaled gradient and to the CPU, the compute copy, ranges
// staged in shared memory or read from global memory, a misaligned view and an odd length).
#include <cstring>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/adamw.h"
#include "ops/elementwise.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::Poisoned;
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
  EXPECT_EQ(p_gpu.ToVector(), p.ToVector());  // the CPU's bits
  EXPECT_EQ(m_gpu.ToVector(), m.ToVector());
  EXPECT_EQ(v_gpu.ToVector(), v.ToVector());
}

// Sorted ranges [a, a + len) every `stride` elements, starting at `first`.
std::vector<int64_t> EveryStride(int64_t first, int64_t len, int64_t stride, int64_t n) {
  std::vector<int64_t> bounds;
  for (int64_t a = first; a + len <= n; a += stride) {
    bounds.push_back(a);
    bounds.push_back(a + len);
  }
  return bounds;
}

Tensor RangesTensor(const std::vector<int64_t>& bounds) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(bounds.size()) / 2, 2}, DType::kI64);
  std::memcpy(t.raw_data(), bounds.data(), bounds.size() * sizeof(int64_t));
  return t;
}

// n elements, the no-decay ranges, and whether the GPU buffers start one element in.
struct FlatCase {
  int64_t n;
  std::vector<int64_t> bounds;
  bool misaligned;
};

class CudaAdamWFlatTest : public ::testing::TestWithParam<FlatCase> {};

TEST_P(CudaAdamWFlatTest, EqualsThePerParameterKernelAndTheCpu) {
  MF_REQUIRE_GPU();
  const FlatCase& c = GetParam();
  const int64_t n = c.n, off = c.misaligned ? 1 : 0;
  const Tensor ranges = RangesTensor(c.bounds);
  const Tensor ranges_gpu = ranges.To(Gpu());
  // GPU state as views `off` elements into their storage.
  auto on_gpu = [&](const Tensor& host, DType dtype) {
    Tensor flat = Tensor::Zeros({n + off}, dtype, Gpu());
    Tensor view = flat.Slice(off, n + off);
    view.CopyFrom(host.To(dtype));
    return view;
  };
  Tensor p = RandomNormal({n}, 1), m = Tensor::Zeros({n}, DType::kF32), v = m.Clone();
  Tensor compute = Tensor::Zeros({n}, DType::kBF16);
  Tensor p_gpu = on_gpu(p, DType::kF32), m_gpu = on_gpu(m, DType::kF32);
  Tensor v_gpu = on_gpu(v, DType::kF32);
  Tensor compute_gpu = on_gpu(compute, DType::kBF16);
  compute_gpu.Fill(NAN);
  // The per-parameter kernel on the scaled gradient, run by run: (begin, end, weight decay).
  std::vector<std::tuple<int64_t, int64_t, float>> runs;
  int64_t a = 0;
  for (size_t r = 0; r < c.bounds.size(); r += 2) {
    runs.emplace_back(a, c.bounds[r], 0.1f);
    runs.emplace_back(c.bounds[r], c.bounds[r + 1], 0.0f);
    a = c.bounds[r + 1];
  }
  runs.emplace_back(a, n, 0.1f);
  Tensor p_ref = p_gpu.Clone(), m_ref = m_gpu.Clone(), v_ref = m_gpu.Clone();
  const Tensor scale = Tensor::FromVector({0.3f}, {1});
  const Tensor scale_gpu = scale.To(Gpu());
  AdamWOptions o{.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  for (int64_t step = 1; step <= 3; ++step) {
    o.step = step;
    const Tensor g = RandomNormal({n}, 20 + step, 0.1f);
    AdamWFlatStep(o, g, scale, ranges, &p, &m, &v, &compute, CpuStream());
    const Tensor g_gpu = on_gpu(g, DType::kF32);
    AdamWFlatStep(o, g_gpu, scale_gpu, ranges_gpu, &p_gpu, &m_gpu, &v_gpu, &compute_gpu,
                  GpuStream());
    Tensor scaled = g_gpu.Clone();
    Scale(0.3f, &scaled, GpuStream());
    for (const auto& [lo, hi, wd] : runs) {
      if (lo >= hi) continue;
      AdamWOptions ro = o;
      ro.weight_decay = wd;
      Tensor pr = p_ref.Slice(lo, hi), mr = m_ref.Slice(lo, hi), vr = v_ref.Slice(lo, hi);
      AdamWStep(ro, scaled.Slice(lo, hi), &pr, &mr, &vr, GpuStream());
    }
  }
  EXPECT_EQ(p_gpu.ToVector(), p_ref.ToVector());
  EXPECT_EQ(m_gpu.ToVector(), m_ref.ToVector());
  EXPECT_EQ(v_gpu.ToVector(), v_ref.ToVector());
  EXPECT_EQ(compute_gpu.ToVector(), p_gpu.To(DType::kBF16).ToVector());
  // IEEE operations one by one on both sides: the CPU's bits.
  EXPECT_EQ(p_gpu.ToVector(), p.ToVector());
  EXPECT_EQ(m_gpu.ToVector(), m.ToVector());
  EXPECT_EQ(v_gpu.ToVector(), v.ToVector());
  EXPECT_EQ(compute_gpu.ToVector(), compute.ToVector());
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaAdamWFlatTest,
                         ::testing::Values(FlatCase{10007, {0, 3, 100, 164, 9000, 10007}, false},
                                           FlatCase{10007, {0, 3, 100, 164, 9000, 10007}, true},
                                           FlatCase{4099, {}, false},
                                           FlatCase{40000, EveryStride(5, 7, 32, 40000),
                                                    false},  // 1250 ranges
                                           FlatCase{1, {0, 1}, false}),
                         [](const ::testing::TestParamInfo<FlatCase>& info) {
                           return absl::StrCat("n", info.param.n, "_r",
                                               info.param.bounds.size() / 2,
                                               info.param.misaligned ? "_misaligned" : "");
                         });

}  // namespace
}  // namespace moefold::ops
