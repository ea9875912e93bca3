// GPU parity of the SPAM gradient transforms against the CPU reference (skips without a GPU):
// per-segment statistics with and without the clip (maxima exact, sums within f32 rounding), the
// clip-and-scale and the spike clip (bit for bit: the same IEEE operations per element), over
// uneven segments with padding between them and an empty segment.
#include <cstring>
#include <vector>

#include "ops/spam.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::RandomNormal;

// Segments [0, 3000), [3008, 3008) (empty), [3072, 10000), [10048, 10007 + 64).
Tensor Segments() {
  const std::vector<int64_t> b = {0, 3000, 3008, 3008, 3072, 10000, 10048, 10071};
  Tensor t = Tensor::Empty({4, 2}, DType::kI64);
  std::memcpy(t.raw_data(), b.data(), b.size() * sizeof(int64_t));
  return t;
}

TEST(CudaSpamTest, SegmentStatsMatchTheCpu) {
  MF_REQUIRE_GPU();
  const Tensor g = RandomNormal({10071}, 1), scale = Tensor::FromVector({0.5f}, {1});
  const Tensor segments = Segments();
  const Tensor clip = Tensor::FromVector({1.0f, 0.25f, 1, 1, 0.5f, 0.5f, 2, 0.1f}, {4, 2});
  for (const Tensor& c : {Tensor(), clip}) {
    Tensor cpu = Tensor::Empty({4, 2}, DType::kF32);
    Tensor gpu = Tensor::Empty({4, 2}, DType::kF32, Gpu());
    SegmentGradStats(g, scale, segments, c, &cpu, CpuStream());
    SegmentGradStats(g.To(Gpu()), scale.To(Gpu()), segments.To(Gpu()),
                     c.defined() ? c.To(Gpu()) : Tensor(), &gpu, GpuStream());
    const std::vector<float> a = cpu.ToVector(), b = gpu.ToVector();
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(b[2 * k], a[2 * k]) << "max of segment " << k;
      EXPECT_NEAR(b[2 * k + 1], a[2 * k + 1], 1e-5 * a[2 * k + 1]) << "sum of segment " << k;
    }
  }
}

TEST(CudaSpamTest, ClipScaleAndSpikeClipMatchTheCpuBitForBit) {
  MF_REQUIRE_GPU();
  const Tensor g = RandomNormal({10071}, 2), scale = Tensor::FromVector({0.5f}, {1});
  const Tensor factors =
      Tensor::FromVector({1.0f, 0.25f, 3, 1, 1, 1, 0.5f, 0.5f, 2, 2, 0.1f, 0.7f}, {4, 3});
  Tensor cpu = g.Clone(), gpu = g.To(Gpu());
  SegmentClipScale(Segments(), factors, scale, &cpu, CpuStream());
  SegmentClipScale(Segments().To(Gpu()), factors.To(Gpu()), scale.To(Gpu()), &gpu, GpuStream());
  EXPECT_EQ(gpu.ToVector(), cpu.ToVector());
  // v ≥ 0 as a second moment is; some entries 0 (clipped to 0 by any nonzero g).
  Tensor v = RandomNormal({10071}, 3, 0.3f);
  for (int64_t i = 0; i < v.numel(); ++i) {
    float& x = v.data<float>()[i];
    x = i % 7 == 0 ? 0.0f : x * x;
  }
  Tensor cpu2 = g.Clone(), gpu2 = g.To(Gpu());
  SpamSpikeClip(scale, v, 4.0f, &cpu2, CpuStream());
  SpamSpikeClip(scale.To(Gpu()), v.To(Gpu()), 4.0f, &gpu2, GpuStream());
  EXPECT_EQ(gpu2.ToVector(), cpu2.ToVector());
}

}  // namespace
}  // namespace moefold::ops
