// GPU parity of the EF21 compressors (skips without a GPU): the sender's Ef21Encode and the owner's
// Ef21DecodeSum give the CPU reference's bits — the messages byte for byte, h and s element for
// element (NaN for NaN) — for every compressor, block sizes below, at and above a thread block,
// partial last blocks, several parts (message fields at odd byte offsets), a rank scale, weights,
// exact ties, NaN/Inf blocks, and a buffer large enough that each thread block loops.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/quant.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::RandomNormal;

// Ragged magnitudes (×1000 between blocks of 97), exact ties every 7th element, and with `poison`
// a NaN and an Inf.
Tensor Data(int64_t n, uint64_t seed, bool poison) {
  std::vector<float> v = RandomNormal({n}, seed).ToVector();
  for (int64_t i = 0; i < n; ++i) {
    v[i] *= std::pow(10.0f, static_cast<float>((i / 97) % 4) - 2);
    if (i % 7 == 0) v[i] = static_cast<float>((i / 7) % 5) - 2.0f;
  }
  if (poison) {
    v[n / 3] = std::numeric_limits<float>::quiet_NaN();
    v[n - 2] = std::numeric_limits<float>::infinity();
  }
  return Tensor::FromVector(v, {n});
}

// A GPU (rows, bytes) u8 tensor filled with 0xA5 whose first byte sits `offset` bytes into its
// storage (rows of an odd byte count after an odd offset leave every field unaligned).
Tensor GpuMessages(int64_t rows, int64_t bytes, bool offset) {
  Tensor host = Tensor::Empty({rows + 1, bytes}, DType::kU8);
  std::memset(host.raw_data(), 0xA5, host.nbytes());
  Tensor gpu = host.To(Gpu());
  return offset ? gpu.Slice(1, rows + 1) : gpu.Slice(0, rows);
}

std::vector<uint8_t> Bytes(const Tensor& t) {
  const Tensor host = t.To(Device::Cpu());
  const uint8_t* p = host.data<uint8_t>();
  return std::vector<uint8_t>(p, p + host.numel());
}

// Equal bits, or both NaN.
::testing::AssertionResult SameFloats(const Tensor& actual, const Tensor& expected) {
  const std::vector<float> a = actual.ToVector(), e = expected.ToVector();
  if (a.size() != e.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(e[i])) continue;
    if (std::memcmp(&a[i], &e[i], 4) != 0) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << e[i];
    }
  }
  return ::testing::AssertionSuccess();
}

struct Case {
  CompressorKind kind;
  int block;
  float fraction;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  static const char* const kNames[] = {"identity", "int8", "fp8", "topk"};
  return absl::StrCat(kNames[static_cast<int>(info.param.kind)], "_b", info.param.block, "_k",
                      static_cast<int>(info.param.fraction * 100));
}

class CudaQuantTest : public ::testing::TestWithParam<Case> {};

TEST_P(CudaQuantTest, EncodeAndDecodeSumMatchTheCpuBitForBit) {
  MF_REQUIRE_GPU();
  const Case& c = GetParam();
  const CompressorSpec spec{c.kind, c.block, c.fraction};
  for (int64_t n : {256, 301, 4099}) {
    for (int64_t parts : {1, 3}) {
      for (float scale : {1.0f, 0.6f}) {
        for (bool poison : {false, true}) {
          const std::string what =
              absl::StrCat("n ", n, " parts ", parts, " scale ", scale, poison ? " poisoned" : "");
          const int64_t bytes = spec.MessageBytes(n), members = 3;
          Tensor received = Tensor::Empty({members, bytes}, DType::kU8);
          for (int64_t m = 0; m < members; ++m) {
            const Tensor v = Data(n * parts, 10 + m, poison && m == 1);
            Tensor h = RandomNormal({n * parts}, 20 + m, 0.5f);
            Tensor h_gpu = h.To(Gpu());
            Tensor message = Tensor::Empty({parts, bytes}, DType::kU8);
            Tensor message_gpu = GpuMessages(parts, bytes, /*offset=*/m % 2 == 1);
            Ef21Encode(v, scale, spec, &h, &message, CpuStream());
            Ef21Encode(v.To(Gpu()), scale, spec, &h_gpu, &message_gpu, GpuStream());
            EXPECT_EQ(Bytes(message_gpu), Bytes(message)) << what << " member " << m;
            EXPECT_TRUE(SameFloats(h_gpu, h)) << what << " h of member " << m;
            std::memcpy(received.data<uint8_t>() + m * bytes, message.raw_data(), bytes);
          }
          for (bool weighted : {false, true}) {
            const Tensor weights =
                weighted ? Tensor::FromVector({0.7f, 1.3f, 1.0f}, {members}) : Tensor();
            Tensor s = RandomNormal({n}, 30, 2.0f);
            Tensor s_gpu = s.To(Gpu());
            Tensor received_gpu = GpuMessages(members, bytes, /*offset=*/true);
            received_gpu.CopyFrom(received.To(Gpu()));
            Ef21DecodeSum(received, spec, weights, &s, CpuStream());
            Ef21DecodeSum(received_gpu, spec, weighted ? weights.To(Gpu()) : Tensor(), &s_gpu,
                          GpuStream());
            EXPECT_TRUE(SameFloats(s_gpu, s)) << what << (weighted ? " weighted" : "") << " s";
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Compressors, CudaQuantTest,
    ::testing::Values(
        Case{CompressorKind::kIdentity, 128, 0.01f}, Case{CompressorKind::kInt8, 32, 0.01f},
        Case{CompressorKind::kInt8, 100, 0.01f}, Case{CompressorKind::kInt8, 128, 0.01f},
        Case{CompressorKind::kInt8, 1000, 0.01f}, Case{CompressorKind::kFp8, 100, 0.01f},
        Case{CompressorKind::kFp8, 128, 0.01f}, Case{CompressorKind::kFp8, 1000, 0.01f},
        Case{CompressorKind::kTopK, 128, 0.01f}, Case{CompressorKind::kTopK, 100, 0.05f},
        Case{CompressorKind::kTopK, 1000, 0.1f}, Case{CompressorKind::kTopK, 64, 1.0f}),
    CaseName);

// A bucket of 2²⁰ elements in 4 parts: more compressor blocks than the grid has thread blocks.
TEST(CudaQuantLargeTest, ManyBlocksPerThreadBlock) {
  MF_REQUIRE_GPU();
  const int64_t size = int64_t{1} << 20, parts = 4, n = size / parts;
  const Tensor v = Data(size, 40, false);
  for (CompressorKind kind : {CompressorKind::kInt8, CompressorKind::kFp8, CompressorKind::kTopK}) {
    const CompressorSpec spec{kind, 128, 0.01f};
    const int64_t bytes = spec.MessageBytes(n);
    Tensor h = RandomNormal({size}, 41, 0.5f);
    Tensor h_gpu = h.To(Gpu());
    Tensor message = Tensor::Empty({parts, bytes}, DType::kU8);
    Tensor message_gpu = GpuMessages(parts, bytes, false);
    Ef21Encode(v, 1.0f, spec, &h, &message, CpuStream());
    Ef21Encode(v.To(Gpu()), 1.0f, spec, &h_gpu, &message_gpu, GpuStream());
    EXPECT_EQ(Bytes(message_gpu), Bytes(message)) << static_cast<int>(kind);
    EXPECT_TRUE(SameFloats(h_gpu, h)) << static_cast<int>(kind);
    Tensor s = Tensor::Zeros({n}, DType::kF32);
    Tensor s_gpu = s.To(Gpu());
    Ef21DecodeSum(message, spec, Tensor(), &s, CpuStream());
    Ef21DecodeSum(message_gpu, spec, Tensor(), &s_gpu, GpuStream());
    EXPECT_TRUE(SameFloats(s_gpu, s)) << static_cast<int>(kind);
  }
}

}  // namespace
}  // namespace moefold::ops
