// GPU fused FP8 producers (skips without a GPU): RmsNormFp8, AddRmsNormFp8, SwiGluFp8 and
// SwiGluBackwardFp8 on the GPU give the bits of the GPU's unfused composition (the op, then CastTransposeAmax or
// QuantizeBlockwise) — codes, padded transposed codes, amaxes, tile scale inverses, the bf16/f32
// output and rstd — for f32 and bf16, both formats, per tensor and 1×128 tiles, shapes where each
// warp walks several rows, zero rows and NaN/Inf inputs. The quantisation half of that equality is
// the CPU's too (ops/fp8.h's casts are bit-exact between devices); the RMSNorm's row sums are
// f32 on the GPU and f64 on the CPU, so the GPU is compared with the GPU's unfused op.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/activation.h"
#include "ops/fp8.h"
#include "ops/fp8_fused.h"
#include "ops/norm.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::RandomNormal;

constexpr float kEps = 1e-5f;

std::vector<uint8_t> Bytes(const Tensor& t) {
  const Tensor host = t.To(Device::Cpu());
  const uint8_t* p = static_cast<const uint8_t*>(host.raw_data());
  return std::vector<uint8_t>(p, p + host.nbytes());
}

Tensor GpuGarbage(const Shape& shape, DType dtype) {
  Tensor host = Tensor::Empty(shape, dtype);
  std::memset(host.raw_data(), 0xA5, host.nbytes());
  return host.To(Gpu());
}

// Values over 10^-4 … 10^3, a zero row 1, and with `poison` NaN/±Inf in the last row.
Tensor Data(int64_t m, int64_t n, uint64_t seed, bool poison, DType dtype) {
  std::vector<float> v = RandomNormal({m, n}, seed).ToVector();
  for (int64_t i = 0; i < m * n; ++i) {
    v[i] *= std::pow(10.0f, static_cast<float>((i / 37) % 8) - 4.0f);
    if (i / n == 1) v[i] = 0.0f;
  }
  if (poison) {
    v[(m - 1) * n] = std::numeric_limits<float>::quiet_NaN();
    v[(m - 1) * n + 1] = std::numeric_limits<float>::infinity();
    v[m * n - 1] = -std::numeric_limits<float>::infinity();
  }
  return Tensor::FromVector(v, {m, n}).To(dtype);
}

struct Case {
  DType input;
  DType format;
  bool tiles;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrCat(DTypeName(info.param.input), "_", DTypeName(info.param.format),
                      info.param.tiles ? "_tiles" : "_per_tensor");
}

struct Outputs {
  Tensor out, codes, codes_t, amax, scale_inv;
};

// The fused producer on the GPU (`fused(q, out)`) against the GPU's unfused op (`unfused(out)`)
// and quantiser.
void ExpectFusedEqualsUnfusedOnGpu(
    const Case& c, int64_t m, int64_t n, const std::string& what,
    const std::function<absl::Status(const Fp8Quantize&, Tensor*)>& fused,
    const std::function<void(Tensor*)>& unfused) {
  SCOPED_TRACE(what);
  Stream& s = GpuStream();
  const Tensor scale = Tensor::FromVector({3.5f}, {1}).To(Gpu());
  Tensor y = GpuGarbage({m, n}, c.input);
  unfused(&y);
  Tensor codes = GpuGarbage({m, n}, c.format), codes_t = GpuGarbage({n, m}, c.format);
  Tensor amax = Tensor::FromVector({0.25f}, {1}).To(Gpu());
  Tensor scale_inv = GpuGarbage({m, n / 128}, DType::kF32);
  if (c.tiles) {
    EXPECT_OK(QuantizeBlockwise(y, kFp8ActivationTile, {}, &codes, &scale_inv, s));
  } else {
    CastTransposeAmax(y, scale, &codes, &codes_t, &amax, s);
  }
  const int64_t m_pad = (m + 127) / 128 * 128 + 128;
  Outputs f{GpuGarbage({m, n}, c.input), GpuGarbage({m, n}, c.format),
            GpuGarbage({n, m_pad}, c.format), Tensor::FromVector({0.25f}, {1}).To(Gpu()),
            GpuGarbage({m, n / 128}, DType::kF32)};
  Fp8Quantize q{.codes = &f.codes};
  if (c.tiles) {
    q.scale_inv = &f.scale_inv;
  } else {
    q.scale = &scale;
    q.codes_t = &f.codes_t;
    q.amax = &f.amax;
  }
  EXPECT_OK(fused(q, &f.out));
  EXPECT_EQ(Bytes(f.out), Bytes(y));
  EXPECT_EQ(Bytes(f.codes), Bytes(codes));
  if (c.tiles) {
    EXPECT_EQ(Bytes(f.scale_inv), Bytes(scale_inv));
  } else {
    EXPECT_EQ(Bytes(f.amax), Bytes(amax));
    const std::vector<uint8_t> got = Bytes(f.codes_t), want = Bytes(codes_t);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < m_pad; ++i) {
        const uint8_t expected = i < m ? want[j * m + i] : 0;
        ASSERT_EQ(got[j * m_pad + i], expected) << "codes_t[" << j << ", " << i << "]";
      }
    }
  }
  // Without the bf16/f32 output the codes are the same.
  Tensor codes_only = GpuGarbage({m, n}, c.format);
  Fp8Quantize q2 = q;
  q2.codes = &codes_only;
  q2.codes_t = nullptr;
  q2.amax = nullptr;
  EXPECT_OK(fused(q2, nullptr));
  EXPECT_EQ(Bytes(codes_only), Bytes(codes));
}

class CudaFp8FusedTest : public ::testing::TestWithParam<Case> {};

const std::vector<std::pair<int64_t, int64_t>> kShapes = {{3, 256}, {1000, 512}, {4099, 384}};

TEST_P(CudaFp8FusedTest, RmsNormFp8EqualsTheGpuComposition) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  for (const auto& [m, n] : kShapes) {
    for (bool poison : {false, true}) {
      const Tensor x = Data(m, n, 21, poison, c.input).To(Gpu());
      const Tensor w = Data(1, n, 22, false, c.input).Reshape({n}).To(Gpu());
      Tensor rstd = GpuGarbage({m}, DType::kF32), f_rstd = GpuGarbage({m}, DType::kF32);
      ExpectFusedEqualsUnfusedOnGpu(
          c, m, n, absl::StrCat(m, "×", n, poison ? " poisoned" : ""),
          [&](const Fp8Quantize& q, Tensor* out) {
            return RmsNormFp8(x, w, kEps, q, out, &f_rstd, GpuStream());
          },
          [&](Tensor* y) { RmsNormForward(x, w, kEps, y, &rstd, GpuStream()); });
      EXPECT_EQ(Bytes(f_rstd), Bytes(rstd));
    }
  }
}

TEST_P(CudaFp8FusedTest, AddRmsNormFp8EqualsTheGpuComposition) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  for (const auto& [m, n] : kShapes) {
    for (bool poison : {false, true}) {
      const Tensor x = Data(m, n, 26, poison, c.input).To(Gpu());
      const Tensor residual = Data(m, n, 27, false, c.input).To(Gpu());
      const Tensor w = Data(1, n, 28, false, c.input).Reshape({n}).To(Gpu());
      Tensor rstd = GpuGarbage({m}, DType::kF32), f_rstd = GpuGarbage({m}, DType::kF32);
      Tensor sum = GpuGarbage({m, n}, c.input), f_sum = GpuGarbage({m, n}, c.input);
      ExpectFusedEqualsUnfusedOnGpu(
          c, m, n, absl::StrCat(m, "×", n, poison ? " poisoned" : ""),
          [&](const Fp8Quantize& q, Tensor* out) {
            return AddRmsNormFp8(x, residual, w, kEps, q, &f_sum, out, &f_rstd, GpuStream());
          },
          [&](Tensor* y) { AddRmsNormForward(x, residual, w, kEps, &sum, y, &rstd, GpuStream()); });
      EXPECT_EQ(Bytes(f_rstd), Bytes(rstd));
      EXPECT_EQ(Bytes(f_sum), Bytes(sum));
    }
  }
}

TEST_P(CudaFp8FusedTest, SwiGluFp8EqualsTheGpuComposition) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  for (const auto& [m, f] : kShapes) {
    for (bool poison : {false, true}) {
      const Tensor gate_up = Data(m, 2 * f, 23, poison, c.input).To(Gpu());
      ExpectFusedEqualsUnfusedOnGpu(
          c, m, f, absl::StrCat(m, "×", f, poison ? " poisoned" : ""),
          [&](const Fp8Quantize& q, Tensor* out) { return SwiGluFp8(gate_up, q, out, GpuStream()); },
          [&](Tensor* act) { SwiGluForward(gate_up, act, GpuStream()); });
    }
  }
}

TEST_P(CudaFp8FusedTest, SwiGluBackwardFp8EqualsTheGpuComposition) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  for (const auto& [m, n] : kShapes) {
    for (bool poison : {false, true}) {
      const Tensor gate_up = Data(m, n, 24, false, c.input).To(Gpu());
      const Tensor d_act = Data(m, n / 2, 25, poison, c.input).To(Gpu());
      ExpectFusedEqualsUnfusedOnGpu(
          c, m, n, absl::StrCat(m, "×", n, poison ? " poisoned" : ""),
          [&](const Fp8Quantize& q, Tensor* out) {
            return SwiGluBackwardFp8(gate_up, d_act, q, out, GpuStream());
          },
          [&](Tensor* d_gate_up) { SwiGluBackward(gate_up, d_act, d_gate_up, GpuStream()); });
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaFp8FusedTest,
                         ::testing::Values(Case{DType::kF32, DType::kFp8E4M3, false},
                                           Case{DType::kBF16, DType::kFp8E4M3, false},
                                           Case{DType::kBF16, DType::kFp8E5M2, false},
                                           Case{DType::kF32, DType::kFp8E4M3, true},
                                           Case{DType::kBF16, DType::kFp8E4M3, true},
                                           Case{DType::kBF16, DType::kFp8E5M2, true}),
                         CaseName);

}  // namespace
}  // namespace moefold::ops
