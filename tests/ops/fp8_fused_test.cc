// The fused FP8 producers on the CPU (ops/fp8_fused.h) equal the unfused composition — the op
// (RmsNormForward, AddRmsNormForward, SwiGluForward, SwiGluBackward) into its activation-dtype output, then
// CastTransposeAmax or QuantizeBlockwise — bit for bit: codes, transposed codes (and their zero
// padding), amaxes, tile scale inverses, the bf16/f32 output and rstd. f32 and bf16 inputs, both
// formats, per tensor and 1×128 tiles (with power-of-two scales), zero rows, no rows, NaN/Inf
// inputs, widths that are not a multiple of 128 (per tensor) and their refusal (tiles).
#include "ops/fp8_fused.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/activation.h"
#include "ops/fp8.h"
#include "ops/norm.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::RandomNormal;

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kEps = 1e-5f;

std::vector<uint8_t> Bytes(const Tensor& t) {
  const uint8_t* p = static_cast<const uint8_t*>(t.raw_data());
  return std::vector<uint8_t>(p, p + t.nbytes());
}

// Values spread over 10^-4 … 10^3, a zero row (row 1 when there is one), and with `poison` a NaN
// and ±Inf in the last row.
Tensor Data(int64_t m, int64_t n, uint64_t seed, bool poison, DType dtype) {
  std::vector<float> v = m * n == 0 ? std::vector<float>() : RandomNormal({m, n}, seed).ToVector();
  for (int64_t i = 0; i < m * n; ++i) {
    v[i] *= std::pow(10.0f, static_cast<float>((i / 37) % 8) - 4.0f);
    if (i / n == 1) v[i] = 0.0f;
  }
  if (poison && m > 2) {
    v[(m - 1) * n] = kNan;
    v[(m - 1) * n + 1] = kInf;
    v[m * n - 1] = -kInf;
  }
  return Tensor::FromVector(v, {m, n}).To(dtype);
}

struct Case {
  DType input;
  DType format;
  bool tiles;
  bool pow2;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrCat(DTypeName(info.param.input), "_", DTypeName(info.param.format),
                      info.param.tiles ? (info.param.pow2 ? "_tiles_pow2" : "_tiles")
                                       : "_per_tensor");
}

int64_t RoundUp(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

// Runs the fused producer (`fused(q, out)`, out possibly null) and the unfused op (`unfused(out)`)
// followed by the unfused quantiser on an (m, n) output, and expects the same bits everywhere.
void ExpectFusedEqualsUnfused(const Case& c, int64_t m, int64_t n, const std::string& what,
                              const std::function<absl::Status(const Fp8Quantize&, Tensor*)>& fused,
                              const std::function<void(Tensor*)>& unfused) {
  SCOPED_TRACE(what);
  Stream& s = CpuStream();
  const Tensor scale = Tensor::FromVector({c.format == DType::kFp8E4M3 ? 3.5f : 700.0f}, {1});
  // Unfused.
  Tensor y = Tensor::Empty({m, n}, c.input);
  unfused(&y);
  Tensor codes = Tensor::Empty({m, n}, c.format), codes_t = Tensor::Empty({n, m}, c.format);
  Tensor amax = Tensor::FromVector({0.25f}, {1});
  Tensor scale_inv = Tensor::Empty({m, n / 128}, DType::kF32);
  if (c.tiles) {
    ASSERT_OK(QuantizeBlockwise(y, kFp8ActivationTile, {.pow2 = c.pow2}, &codes, &scale_inv, s));
  } else {
    CastTransposeAmax(y, scale, &codes, &codes_t, &amax, s);
  }
  // Fused, with and without the activation-dtype output.
  for (bool with_out : {true, false}) {
    SCOPED_TRACE(with_out ? "with the bf16/f32 output" : "codes only");
    const int64_t m_pad = RoundUp(m, 128) + (m % 128 == 0 ? 128 : 0);  // always some padding
    Tensor f_codes = Tensor::Empty({m, n}, c.format), f_codes_t = Tensor::Empty({n, m_pad}, c.format);
    std::memset(f_codes_t.raw_data(), 0xA5, f_codes_t.nbytes());  // padding must be written
    Tensor f_amax = Tensor::FromVector({0.25f}, {1});
    Tensor f_scale_inv = Tensor::Empty({m, n / 128}, DType::kF32);
    Fp8Quantize q{.codes = &f_codes};
    if (c.tiles) {
      q.scale_inv = &f_scale_inv;
      q.pow2 = c.pow2;
    } else {
      q.scale = &scale;
      q.codes_t = &f_codes_t;
      q.amax = &f_amax;
    }
    Tensor out = Tensor::Empty({m, n}, c.input);
    ASSERT_OK(fused(q, with_out ? &out : nullptr));
    EXPECT_EQ(Bytes(f_codes), Bytes(codes));
    if (with_out) {
      EXPECT_EQ(Bytes(out), Bytes(y));
    }
    if (c.tiles) {
      EXPECT_EQ(Bytes(f_scale_inv), Bytes(scale_inv));
    } else {
      EXPECT_EQ(Bytes(f_amax), Bytes(amax));  // NaN's bits too
      for (int64_t j = 0; j < n; ++j) {
        const uint8_t* row = f_codes_t.data<uint8_t>() + j * m_pad;
        ASSERT_EQ(std::vector<uint8_t>(row, row + m),
                  std::vector<uint8_t>(codes_t.data<uint8_t>() + j * m,
                                       codes_t.data<uint8_t>() + (j + 1) * m))
            << "codes_t row " << j;
        ASSERT_EQ(std::vector<uint8_t>(row + m, row + m_pad), std::vector<uint8_t>(m_pad - m, 0))
            << "codes_t padding of row " << j;
      }
    }
  }
}

class Fp8FusedTest : public ::testing::TestWithParam<Case> {
 protected:
  // Row counts (none, a few, more than a tile's worth) and widths: 256 always, 200 (not a
  // multiple of 128) per tensor only.
  std::vector<std::pair<int64_t, int64_t>> Shapes() const {
    std::vector<std::pair<int64_t, int64_t>> shapes = {{0, 256}, {3, 256}, {130, 256}};
    if (!GetParam().tiles) shapes.push_back({5, 200});
    return shapes;
  }
};

TEST_P(Fp8FusedTest, RmsNormFp8EqualsNormThenQuantize) {
  const Case& c = GetParam();
  for (const auto& [m, n] : Shapes()) {
    for (bool poison : {false, true}) {
      const Tensor x = Data(m, n, 11, poison, c.input);
      const Tensor w = Data(1, n, 12, false, DType::kF32).Reshape({n}).To(c.input);
      Tensor rstd = Tensor::Empty({m}, DType::kF32), f_rstd = Tensor::Empty({m}, DType::kF32);
      ExpectFusedEqualsUnfused(
          c, m, n, absl::StrCat(m, "×", n, poison ? " poisoned" : ""),
          [&](const Fp8Quantize& q, Tensor* out) {
            return RmsNormFp8(x, w, kEps, q, out, &f_rstd, CpuStream());
          },
          [&](Tensor* y) { RmsNormForward(x, w, kEps, y, &rstd, CpuStream()); });
      EXPECT_EQ(Bytes(f_rstd), Bytes(rstd));
    }
  }
}

TEST_P(Fp8FusedTest, AddRmsNormFp8EqualsAddNormThenQuantize) {
  const Case& c = GetParam();
  for (const auto& [m, n] : Shapes()) {
    for (bool poison : {false, true}) {
      const Tensor x = Data(m, n, 16, poison, c.input);
      const Tensor residual = Data(m, n, 17, false, c.input);
      const Tensor w = Data(1, n, 18, false, DType::kF32).Reshape({n}).To(c.input);
      Tensor rstd = Tensor::Empty({m}, DType::kF32), f_rstd = Tensor::Empty({m}, DType::kF32);
      Tensor sum = Tensor::Empty({m, n}, c.input), f_sum = Tensor::Empty({m, n}, c.input);
      ExpectFusedEqualsUnfused(
          c, m, n, absl::StrCat(m, "×", n, poison ? " poisoned" : ""),
          [&](const Fp8Quantize& q, Tensor* out) {
            return AddRmsNormFp8(x, residual, w, kEps, q, &f_sum, out, &f_rstd, CpuStream());
          },
          [&](Tensor* y) { AddRmsNormForward(x, residual, w, kEps, &sum, y, &rstd, CpuStream()); });
      EXPECT_EQ(Bytes(f_rstd), Bytes(rstd));
      EXPECT_EQ(Bytes(f_sum), Bytes(sum));
    }
  }
}

TEST_P(Fp8FusedTest, SwiGluFp8EqualsSwiGluThenQuantize) {
  const Case& c = GetParam();
  for (const auto& [m, f] : Shapes()) {
    for (bool poison : {false, true}) {
      const Tensor gate_up = Data(m, 2 * f, 13, poison, c.input);
      ExpectFusedEqualsUnfused(
          c, m, f, absl::StrCat(m, "×", f, poison ? " poisoned" : ""),
          [&](const Fp8Quantize& q, Tensor* out) { return SwiGluFp8(gate_up, q, out, CpuStream()); },
          [&](Tensor* act) { SwiGluForward(gate_up, act, CpuStream()); });
    }
  }
}

TEST_P(Fp8FusedTest, SwiGluBackwardFp8EqualsBackwardThenQuantize) {
  const Case& c = GetParam();
  for (const auto& [m, n] : Shapes()) {
    const int64_t f = n / 2;  // the quantised d_gate_up is (m, 2F) = (m, n)
    for (bool poison : {false, true}) {
      const Tensor gate_up = Data(m, n, 14, false, c.input);
      const Tensor d_act = Data(m, f, 15, poison, c.input);
      ExpectFusedEqualsUnfused(
          c, m, n, absl::StrCat(m, "×", n, poison ? " poisoned" : ""),
          [&](const Fp8Quantize& q, Tensor* out) {
            return SwiGluBackwardFp8(gate_up, d_act, q, out, CpuStream());
          },
          [&](Tensor* d_gate_up) { SwiGluBackward(gate_up, d_act, d_gate_up, CpuStream()); });
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, Fp8FusedTest,
    ::testing::Values(Case{DType::kF32, DType::kFp8E4M3, false, false},
                      Case{DType::kBF16, DType::kFp8E4M3, false, false},
                      Case{DType::kBF16, DType::kFp8E5M2, false, false},
                      Case{DType::kF32, DType::kFp8E4M3, true, false},
                      Case{DType::kBF16, DType::kFp8E4M3, true, false},
                      Case{DType::kBF16, DType::kFp8E5M2, true, true}),
    CaseName);

TEST(Fp8FusedRefusalTest, TilesNeedWidthsThatAreMultiplesOf128) {
  Stream& s = CpuStream();
  Tensor codes = Tensor::Empty({4, 200}, DType::kFp8E4M3);
  Tensor scale_inv = Tensor::Empty({4, 1}, DType::kF32);
  const Fp8Quantize q{.codes = &codes, .scale_inv = &scale_inv};
  Tensor rstd = Tensor::Empty({4}, DType::kF32);
  const absl::Status norm = RmsNormFp8(Tensor::Zeros({4, 200}, DType::kF32),
                                       Tensor::Zeros({200}, DType::kF32), kEps, q, nullptr, &rstd,
                                       s);
  EXPECT_EQ(norm.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(norm.message().find("RmsNormFp8: the hidden size N = 200 is not a multiple of the "
                                "1×128 tile's 128 columns"),
            std::string::npos)
      << norm;
  const absl::Status act = SwiGluFp8(Tensor::Zeros({4, 400}, DType::kF32), q, nullptr, s);
  EXPECT_NE(act.message().find("SwiGluFp8: the FFN width F = 200"), std::string::npos) << act;
  const absl::Status back = SwiGluBackwardFp8(Tensor::Zeros({4, 200}, DType::kF32),
                                              Tensor::Zeros({4, 100}, DType::kF32), q, nullptr, s);
  EXPECT_NE(back.message().find("SwiGluBackwardFp8: the gate_up width 2F = 200"),
            std::string::npos)
      << back;
}

}  // namespace
}  // namespace moefold::ops
