// GPU parity of the FP8 GEMM and the padded transpose (skip without a GPU): cuBLASLt's per-tensor
// FP8 matmul (with and without fast accumulation, f32 and bf16 outputs, accumulating), our
// blockwise kernel, and the per-row A scales of dispatched rows (E4M3 inputs, E5M2 gradients; our
// kernel as one K block) against the CPU reference within the accumulation tolerance; the
// transpose bit for bit.
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/fp8.h"
#include "ops/fp8_gemm.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::RandomNormal;

// Codes of x (M, K) quantised per tensor (scale 448 / max|x|) or in blocks.
struct Quantised {
  Tensor q, scale_inv;
};

Quantised PerTensor(const Tensor& x, DType format) {
  Tensor scale = Tensor::FromVector({1.0f}, {1}), inv = Tensor::FromVector({1.0f}, {1});
  Tensor amax = Tensor::Zeros({1}, DType::kF32);
  CastTransposeAmax(x, scale, nullptr, nullptr, &amax, CpuStream());
  Fp8UpdateScales(Fp8Max(format), &amax, nullptr, &scale, &inv, CpuStream());
  Tensor q = Tensor::Empty(x.shape(), format);
  CastTransposeAmax(x, scale, &q, nullptr, nullptr, CpuStream());
  return {q, inv};
}

Quantised Blocks(const Tensor& x, const Fp8BlockShape& block) {
  Quantised r{Tensor::Empty(x.shape(), DType::kFp8E4M3),
              Tensor::Empty({x.dim(0) / block.rows, x.dim(1) / block.cols}, DType::kF32)};
  MF_CHECK(QuantizeBlockwise(x, block, {}, &r.q, &r.scale_inv, CpuStream()).ok());
  return r;
}

void ExpectClose(const Tensor& gpu, const Tensor& cpu, double rel, const std::string& what) {
  const std::vector<float> g = gpu.ToVector(), c = cpu.ToVector();
  ASSERT_EQ(g.size(), c.size());
  double scale = 0;
  for (float v : c) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_NEAR(g[i], c[i], rel * scale + 1e-6) << what << " element " << i;
  }
}

TEST(CudaFp8GemmTest, PerTensorMatchesTheCpu) {
  MF_REQUIRE_GPU();
  for (const auto& [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {16, 16, 16}, {33, 48, 64}, {256, 384, 512}}) {
    for (DType bf : {DType::kFp8E4M3, DType::kFp8E5M2}) {
      for (DType out : {DType::kF32, DType::kBF16}) {
        for (bool fast : {false, true}) {
          const std::string what = absl::StrCat(m, "×", n, "×", k, " b ", DTypeName(bf), " → ",
                                                DTypeName(out), fast ? " fast" : "");
          const Quantised a = PerTensor(RandomNormal({m, k}, 1), DType::kFp8E4M3);
          const Quantised b = PerTensor(RandomNormal({n, k}, 2, 0.02f), bf);
          const Tensor c0 = RandomNormal({m, n}, 3).To(out);
          Tensor c = c0.Clone(), c_gpu = c0.To(Gpu());
          ASSERT_TRUE(Fp8Gemm(a.q, a.scale_inv, b.q, b.scale_inv, {.fast_accumulation = fast},
                              1.0f, &c, CpuStream()).ok());
          ASSERT_TRUE(Fp8Gemm(a.q.To(Gpu()), a.scale_inv.To(Gpu()), b.q.To(Gpu()),
                              b.scale_inv.To(Gpu()), {.fast_accumulation = fast}, 1.0f, &c_gpu,
                              GpuStream()).ok());
          // Fast accumulation keeps fewer bits of the running sums than f32.
          ExpectClose(c_gpu, c, out == DType::kBF16 ? 1e-2 : fast ? 2e-3 : 1e-4, what);
        }
      }
    }
  }
}

TEST(CudaFp8GemmTest, BlockwiseMatchesTheCpu) {
  MF_REQUIRE_GPU();
  for (const auto& [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 128, 128}, {70, 256, 384}, {300, 128, 256}}) {
    const Quantised a = Blocks(RandomNormal({m, k}, 4), kFp8ActivationTile);
    const Quantised b = Blocks(RandomNormal({n, k}, 5, 0.02f), kFp8WeightBlock);
    for (float beta : {0.0f, 1.0f}) {
      const Tensor c0 = RandomNormal({m, n}, 6);
      Tensor c = c0.Clone(), c_gpu = c0.To(Gpu());
      ASSERT_TRUE(Fp8Gemm(a.q, a.scale_inv, b.q, b.scale_inv, {.block_k = 128}, beta, &c,
                          CpuStream()).ok());
      ASSERT_TRUE(Fp8Gemm(a.q.To(Gpu()), a.scale_inv.To(Gpu()), b.q.To(Gpu()),
                          b.scale_inv.To(Gpu()), {.block_k = 128}, beta, &c_gpu, GpuStream())
                      .ok());
      ExpectClose(c_gpu, c, 1e-5, absl::StrCat(m, "×", n, "×", k, " beta ", beta));
    }
  }
}

// Each row of x (M, K) quantised with its own scale: codes and (M, 1) inverse scales.
Quantised PerRow(const Tensor& x, DType format) {
  Quantised r{Tensor::Empty(x.shape(), format), Tensor::Empty({x.dim(0), 1}, DType::kF32)};
  for (int64_t i = 0; i < x.dim(0); ++i) {
    const Quantised row = PerTensor(x.Slice(i, i + 1), format);
    std::memcpy(r.q.Slice(i, i + 1).raw_data(), row.q.raw_data(), row.q.nbytes());
    r.scale_inv.data<float>()[i] = row.scale_inv.data<float>()[0];
  }
  return r;
}

TEST(CudaFp8GemmTest, PerRowScalesMatchTheCpu) {
  MF_REQUIRE_GPU();
  for (const auto& [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {2, 32, 32}, {37, 64, 96}, {200, 128, 256}}) {
    for (DType af : {DType::kFp8E4M3, DType::kFp8E5M2}) {
      const std::string what = absl::StrCat(m, "×", n, "×", k, " a ", DTypeName(af));
      // Rows of very different magnitudes, as rows from several senders.
      std::vector<float> v = RandomNormal({m, k}, 7).ToVector();
      for (int64_t i = 0; i < m * k; ++i) {
        v[i] *= std::pow(10.0f, static_cast<float>(i / k % 5) - 2.0f);
      }
      const Quantised a = PerRow(Tensor::FromVector(v, {m, k}), af);
      const Quantised b = PerTensor(RandomNormal({n, k}, 8, 0.02f), DType::kFp8E4M3);
      for (float beta : {0.0f, 1.0f}) {
        const Tensor c0 = RandomNormal({m, n}, 9);
        Tensor c = c0.Clone(), c_gpu = c0.To(Gpu());
        ASSERT_TRUE(Fp8Gemm(a.q, a.scale_inv, b.q, b.scale_inv, {}, beta, &c, CpuStream()).ok());
        ASSERT_TRUE(Fp8Gemm(a.q.To(Gpu()), a.scale_inv.To(Gpu()), b.q.To(Gpu()),
                            b.scale_inv.To(Gpu()), {}, beta, &c_gpu, GpuStream())
                        .ok());
        ExpectClose(c_gpu, c, 1e-5, absl::StrCat(what, " beta ", beta));
      }
    }
  }
  // Our kernel steps K in slices of 32: another K is refused by name.
  const Quantised a = PerRow(RandomNormal({4, 48}, 10), DType::kFp8E4M3);
  const Quantised b = PerTensor(RandomNormal({8, 48}, 11), DType::kFp8E4M3);
  Tensor c = Tensor::Zeros({4, 8}, DType::kF32).To(Gpu());
  const absl::Status status = Fp8Gemm(a.q.To(Gpu()), a.scale_inv.To(Gpu()), b.q.To(Gpu()),
                                      b.scale_inv.To(Gpu()), {}, 0.0f, &c, GpuStream());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("multiple of 32"), std::string::npos) << status;
}

TEST(CudaFp8GemmTest, TransposePadMatchesTheCpu) {
  MF_REQUIRE_GPU();
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kFp8E4M3}) {
    for (const auto& [m, n, mp] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 1, 128}, {33, 65, 128}, {300, 40, 384}}) {
      const Tensor x = RandomNormal({m, n}, 7).To(dtype);
      Tensor y = Tensor::Empty({n, mp}, dtype);
      Tensor y_gpu = Tensor::Empty({n, mp}, dtype, Gpu());
      TransposePad(x, &y, CpuStream());
      TransposePad(x.To(Gpu()), &y_gpu, GpuStream());
      EXPECT_EQ(y_gpu.To(Device::Cpu()).ToVector(), y.ToVector()) << DTypeName(dtype);
    }
  }
}

}  // namespace
}  // namespace moefold::ops
