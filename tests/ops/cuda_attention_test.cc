// GPU parity of causal GQA attention forward (out, lse) and backward (d_q, d_k, d_v) against the
// unfused CPU reference for each GPU backend: cuDNN's fused SDPA (bf16, head dim 64 and 128), the
// flash kernels (bf16, head dim 64 and 128, S % 64 == 0) and the row kernels (f32, other shapes),
// plus cuDNN against the flash kernels on the same inputs. The parity tests skip without a GPU; on
// a GPU a cuDNN that cannot build its plans fails them (the backend is forced, never a fallback).
// Then context parallelism's ops: the block forward and backward (flash and row kernels, full and
// causal masks, query and key blocks of different lengths, f32 partials, gradients added to), the
// online-softmax merge with empty sides and the chunk-layout swap.
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "ops/attention.h"
#include "tests/ops/grad_check.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;
using ::moefold::testing::ToHostF32;

// Selects a GPU attention backend for one test and restores the previous one.
class BackendScope {
 public:
  explicit BackendScope(AttentionBackend backend) : saved_(GetAttentionBackend()) {
    SetAttentionBackend(backend);
  }
  ~BackendScope() { SetAttentionBackend(saved_); }
  BackendScope(const BackendScope&) = delete;
  BackendScope& operator=(const BackendScope&) = delete;

 private:
  AttentionBackend saved_;
};

struct AttentionCase {
  std::string name;
  DType dtype;
  int64_t batch, seq, q_heads, kv_heads, dim;
  AttentionBackend backend;
  // cuDNN <= 9.15.0 declines the backward of S % 128 != 0 (ops/cuda/attention_cudnn.cc): then the
  // case runs under kAuto, which must fall back to our kernels for what cuDNN declines.
  bool cudnn_may_decline = false;
};

// The problem's tensors: bf16-rounded random inputs on the host and the GPU.
struct Problem {
  explicit Problem(const AttentionCase& c)
      : q_shape{c.batch, c.seq, c.q_heads, c.dim},
        kv_shape{c.batch, c.seq, c.kv_heads, c.dim},
        lse_shape{c.batch, c.q_heads, c.seq},
        scale(1.0f / std::sqrt(static_cast<float>(c.dim))),
        q(RoundedTo(RandomNormal(q_shape, 1), c.dtype)),
        k(RoundedTo(RandomNormal(kv_shape, 2), c.dtype)),
        v(RoundedTo(RandomNormal(kv_shape, 3), c.dtype)),
        d_out(RoundedTo(RandomNormal(q_shape, 4), c.dtype)),
        q_gpu(ToGpu(q, c.dtype)),
        k_gpu(ToGpu(k, c.dtype)),
        v_gpu(ToGpu(v, c.dtype)),
        d_out_gpu(ToGpu(d_out, c.dtype)) {}
  Shape q_shape, kv_shape, lse_shape;
  float scale;
  Tensor q, k, v, d_out;
  Tensor q_gpu, k_gpu, v_gpu, d_out_gpu;
};

// GPU results of one backend, every output poisoned first.
struct GpuResult {
  Tensor out, lse, d_q, d_k, d_v;
};

GpuResult RunGpu(const Problem& p, DType dt, AttentionBackend backend) {
  BackendScope scope(backend);
  GpuResult r{Poisoned(p.q_shape, dt), Poisoned(p.lse_shape, DType::kF32), Poisoned(p.q_shape, dt),
              Poisoned(p.kv_shape, dt), Poisoned(p.kv_shape, dt)};
  AttentionForward(p.q_gpu, p.k_gpu, p.v_gpu, p.scale, &r.out, &r.lse, GpuStream());
  AttentionBackward(p.q_gpu, p.k_gpu, p.v_gpu, r.out, r.lse, p.d_out_gpu, p.scale, &r.d_q, &r.d_k,
                    &r.d_v, GpuStream());
  GpuStream().Synchronize();
  return r;
}

class CudaAttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(CudaAttentionTest, ForwardAndBackwardMatchTheReference) {
  MF_REQUIRE_GPU();
  const AttentionCase& c = GetParam();
  const DType dt = c.dtype;
  AttentionBackend backend = c.backend;
  if (backend == AttentionBackend::kCudnn) {
    const absl::Status available =
        CudnnAttentionAvailable(c.batch, c.seq, c.q_heads, c.kv_heads, c.dim, dt, Gpu());
    if (c.cudnn_may_decline && available.code() == absl::StatusCode::kUnimplemented) {
      std::printf("cuDNN declines (%s); checking kAuto's fallback\n",
                  std::string(available.message()).c_str());
      backend = AttentionBackend::kAuto;
    } else {
      ASSERT_OK(available);
    }
  }
  const Problem p(c);

  Tensor out = Tensor::Zeros(p.q_shape, DType::kF32), lse = Tensor::Zeros(p.lse_shape, DType::kF32);
  AttentionForward(p.q, p.k, p.v, p.scale, &out, &lse, CpuStream());
  const GpuResult g = RunGpu(p, dt, backend);
  EXPECT_TRUE(ParityNear(g.out, out, dt)) << "out";
  EXPECT_TRUE(ParityNear(g.lse, lse, dt)) << "lse";

  // Backward from each side's own forward results (the GPU saves bf16 out).
  Tensor d_q = Tensor::Zeros(p.q_shape, DType::kF32), d_k = Tensor::Zeros(p.kv_shape, DType::kF32);
  Tensor d_v = Tensor::Zeros(p.kv_shape, DType::kF32);
  AttentionBackward(p.q, p.k, p.v, out, lse, p.d_out, p.scale, &d_q, &d_k, &d_v, CpuStream());
  EXPECT_TRUE(ParityNear(g.d_q, d_q, dt)) << "d_q";
  EXPECT_TRUE(ParityNear(g.d_k, d_k, dt)) << "d_k";
  EXPECT_TRUE(ParityNear(g.d_v, d_v, dt)) << "d_v";
}

constexpr DType kBf16 = DType::kBF16;
constexpr DType kF32 = DType::kF32;
constexpr AttentionBackend kCudnn = AttentionBackend::kCudnn;
constexpr AttentionBackend kFlash = AttentionBackend::kFlash;
constexpr AttentionBackend kRows = AttentionBackend::kRows;
constexpr AttentionBackend kAuto = AttentionBackend::kAuto;

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttentionTest,
    ::testing::Values(AttentionCase{"cudnn_d64_gqa", kBf16, 2, 128, 4, 2, 64, kCudnn},
                      AttentionCase{"cudnn_d128_gqa", kBf16, 1, 256, 8, 2, 128, kCudnn},
                      AttentionCase{"cudnn_d128_mha", kBf16, 1, 128, 2, 2, 128, kCudnn},
                      AttentionCase{"cudnn_d64_mqa_s192", kBf16, 1, 192, 4, 1, 64, kCudnn, true},
                      AttentionCase{"cudnn_d128_s100", kBf16, 2, 100, 4, 2, 128, kCudnn, true},
                      AttentionCase{"auto_d128_gqa", kBf16, 1, 256, 4, 2, 128, kAuto},
                      AttentionCase{"flash_d64_gqa", kBf16, 2, 128, 4, 2, 64, kFlash},
                      AttentionCase{"flash_d128_mqa", kBf16, 1, 192, 4, 1, 128, kFlash},
                      AttentionCase{"flash_d128_mha", kBf16, 1, 64, 2, 2, 128, kFlash},
                      AttentionCase{"rows_f32_d64", kF32, 2, 64, 4, 2, 64, kRows},
                      AttentionCase{"rows_f32_odd", kF32, 1, 37, 6, 3, 40, kRows},
                      AttentionCase{"rows_bf16_odd", kBf16, 2, 50, 4, 4, 32, kRows},
                      AttentionCase{"rows_bf16_d128", kBf16, 1, 128, 4, 2, 128, kRows}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; });

// cuDNN and the flash kernels on the same inputs; the backward of both starts from the flash
// forward's out and lse, so it compares the backward alone.
class CudnnVersusFlashTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(CudnnVersusFlashTest, AgreeOnTheSameInputs) {
  MF_REQUIRE_GPU();
  const AttentionCase& c = GetParam();
  ASSERT_OK(CudnnAttentionAvailable(c.batch, c.seq, c.q_heads, c.kv_heads, c.dim, c.dtype, Gpu()));
  const Problem p(c);
  const GpuResult flash = RunGpu(p, c.dtype, kFlash);
  BackendScope scope(kCudnn);
  Tensor out = Poisoned(p.q_shape, c.dtype), lse = Poisoned(p.lse_shape, kF32);
  AttentionForward(p.q_gpu, p.k_gpu, p.v_gpu, p.scale, &out, &lse, GpuStream());
  EXPECT_TRUE(ParityNear(out, ToHostF32(flash.out), c.dtype)) << "out";
  EXPECT_TRUE(ParityNear(lse, ToHostF32(flash.lse), c.dtype)) << "lse";
  Tensor d_q = Poisoned(p.q_shape, c.dtype), d_k = Poisoned(p.kv_shape, c.dtype);
  Tensor d_v = Poisoned(p.kv_shape, c.dtype);
  AttentionBackward(p.q_gpu, p.k_gpu, p.v_gpu, flash.out, flash.lse, p.d_out_gpu, p.scale, &d_q,
                    &d_k, &d_v, GpuStream());
  EXPECT_TRUE(ParityNear(d_q, ToHostF32(flash.d_q), c.dtype)) << "d_q";
  EXPECT_TRUE(ParityNear(d_k, ToHostF32(flash.d_k), c.dtype)) << "d_k";
  EXPECT_TRUE(ParityNear(d_v, ToHostF32(flash.d_v), c.dtype)) << "d_v";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudnnVersusFlashTest,
    ::testing::Values(AttentionCase{"d64_gqa", kBf16, 1, 256, 8, 2, 64, kCudnn},
                      AttentionCase{"d128_mqa", kBf16, 2, 128, 4, 1, 128, kCudnn}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) { return info.param.name; });

struct BlockCase {
  std::string name;
  DType dtype;
  int64_t batch, q_seq, kv_seq, q_heads, kv_heads, dim;
  AttentionMask mask;
  AttentionBackend backend;
};

class CudaAttentionBlockTest : public ::testing::TestWithParam<BlockCase> {};

// Forward with an f32 out (the ring's partial) and with an out of q's dtype; backward from the
// CPU's out (in q's dtype) and lse, added to random f32 gradients: the parts added must match.
TEST_P(CudaAttentionBlockTest, ForwardAndBackwardMatchTheReference) {
  MF_REQUIRE_GPU();
  const BlockCase& c = GetParam();
  const DType dt = c.dtype;
  BackendScope scope(c.backend);
  const Shape q_shape{c.batch, c.q_seq, c.q_heads, c.dim},
      kv_shape{c.batch, c.kv_seq, c.kv_heads, c.dim};
  const Shape lse_shape{c.batch, c.q_heads, c.q_seq};
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  const Tensor q = RoundedTo(RandomNormal(q_shape, 11), dt);
  const Tensor k = RoundedTo(RandomNormal(kv_shape, 12), dt);
  const Tensor v = RoundedTo(RandomNormal(kv_shape, 13), dt);
  const Tensor d_out = RoundedTo(RandomNormal(q_shape, 14), dt);
  const Tensor q_gpu = ToGpu(q, dt), k_gpu = ToGpu(k, dt), v_gpu = ToGpu(v, dt);

  Tensor out = Tensor::Zeros(q_shape, kF32), lse = Tensor::Zeros(lse_shape, kF32);
  AttentionBlockForward(q, k, v, scale, c.mask, &out, &lse, CpuStream());
  Tensor out_f32 = Poisoned(q_shape, kF32), lse_gpu = Poisoned(lse_shape, kF32);
  AttentionBlockForward(q_gpu, k_gpu, v_gpu, scale, c.mask, &out_f32, &lse_gpu, GpuStream());
  Tensor out_dt = Poisoned(q_shape, dt), lse_dt = Poisoned(lse_shape, kF32);
  AttentionBlockForward(q_gpu, k_gpu, v_gpu, scale, c.mask, &out_dt, &lse_dt, GpuStream());
  EXPECT_TRUE(ParityNear(out_f32, out, dt)) << "f32 out";
  EXPECT_TRUE(ParityNear(lse_gpu, lse, dt)) << "lse";
  EXPECT_TRUE(ParityNear(out_dt, out, dt)) << "out in the inputs' dtype";
  EXPECT_TRUE(ParityNear(lse_dt, lse, dt)) << "lse with the inputs' dtype";

  const Tensor out_in = RoundedTo(out, dt);
  const Tensor dq0 = RandomNormal(q_shape, 15), dk0 = RandomNormal(kv_shape, 16);
  const Tensor dv0 = RandomNormal(kv_shape, 17);
  Tensor d_q = dq0.Clone(), d_k = dk0.Clone(), d_v = dv0.Clone();
  AttentionBlockBackward(q, k, v, out_in, lse, d_out, scale, c.mask, &d_q, &d_k, &d_v, CpuStream());
  Tensor gd_q = ToGpu(dq0), gd_k = ToGpu(dk0), gd_v = ToGpu(dv0);
  AttentionBlockBackward(q_gpu, k_gpu, v_gpu, ToGpu(out_in, dt), ToGpu(lse), ToGpu(d_out, dt),
                         scale, c.mask, &gd_q, &gd_k, &gd_v, GpuStream());
  GpuStream().Synchronize();
  EXPECT_TRUE(ParityNear(Delta(ToHostF32(gd_q), dq0), Delta(d_q, dq0), dt)) << "d_q added";
  EXPECT_TRUE(ParityNear(Delta(ToHostF32(gd_k), dk0), Delta(d_k, dk0), dt)) << "d_k added";
  EXPECT_TRUE(ParityNear(Delta(ToHostF32(gd_v), dv0), Delta(d_v, dv0), dt)) << "d_v added";
}

constexpr AttentionMask kFull = AttentionMask::kNone;
constexpr AttentionMask kCausal = AttentionMask::kCausal;

INSTANTIATE_TEST_SUITE_P(
    Blocks, CudaAttentionBlockTest,
    ::testing::Values(BlockCase{"flash_d64_full_gqa", kBf16, 2, 128, 64, 4, 2, 64, kFull, kFlash},
                      BlockCase{"flash_d128_full_mqa", kBf16, 1, 64, 192, 4, 1, 128, kFull, kFlash},
                      BlockCase{"flash_d64_causal", kBf16, 1, 128, 128, 4, 2, 64, kCausal, kFlash},
                      BlockCase{"auto_d128_full", kBf16, 1, 128, 128, 2, 2, 128, kFull, kAuto},
                      BlockCase{"rows_f32_full_odd", kF32, 2, 37, 20, 6, 3, 40, kFull, kRows},
                      BlockCase{"rows_bf16_causal", kBf16, 1, 12, 12, 4, 2, 32, kCausal, kRows},
                      BlockCase{"rows_bf16_full_d128", kBf16, 1, 64, 128, 4, 2, 128, kFull, kRows}),
    [](const ::testing::TestParamInfo<BlockCase>& info) { return info.param.name; });

// The merge on the GPU against the CPU reference, with empty sides (lse = −inf, NaN in their out)
// in a few rows, out_b f32 or bf16, and in place.
TEST(CudaAttentionMergeTest, MatchesTheReference) {
  MF_REQUIRE_GPU();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const Shape out_shape{2, 5, 3, 40}, lse_shape{2, 3, 5};
  Tensor out_a = RandomNormal(out_shape, 21), lse_a = RandomNormal(lse_shape, 22, 3.0f);
  Tensor out_b = RandomNormal(out_shape, 23), lse_b = RandomNormal(lse_shape, 24, 3.0f);
  // (b 0, h 1, query 2): a empty; (b 1, h 0, query 4): b empty; (b 1, h 2, query 0): both.
  const auto empty = [&](Tensor* out, Tensor* lse, int64_t b, int64_t h, int64_t i) {
    lse->data<float>()[(b * 3 + h) * 5 + i] = -kInf;
    for (int64_t c = 0; c < 40; ++c) out->data<float>()[((b * 5 + i) * 3 + h) * 40 + c] = NAN;
  };
  empty(&out_a, &lse_a, 0, 1, 2);
  empty(&out_b, &lse_b, 1, 0, 4);
  empty(&out_a, &lse_a, 1, 2, 0);
  empty(&out_b, &lse_b, 1, 2, 0);
  for (const DType b_dtype : {kF32, kBf16}) {
    const Tensor b_in = RoundedTo(out_b, b_dtype);
    Tensor out = Tensor::Zeros(out_shape, kF32), lse = Tensor::Zeros(lse_shape, kF32);
    AttentionMerge(out_a, lse_a, b_in, lse_b, &out, &lse, CpuStream());
    // In place on the GPU: the result replaces out_a and lse_a.
    Tensor g_out = ToGpu(out_a), g_lse = ToGpu(lse_a);
    AttentionMerge(g_out, g_lse, ToGpu(b_in, b_dtype), ToGpu(lse_b), &g_out, &g_lse, GpuStream());
    GpuStream().Synchronize();
    EXPECT_TRUE(ParityNear(g_out, out, kF32)) << DTypeName(b_dtype);
    const Tensor got = ToHostF32(g_lse);
    for (int64_t i = 0; i < lse.numel(); ++i) {
      const float e = lse.data<float>()[i], a = got.data<float>()[i];
      if (std::isinf(e)) {
        EXPECT_EQ(a, e) << i;
      } else {
        EXPECT_NEAR(a, e, 1e-5 * (1 + std::fabs(e))) << i;
      }
    }
  }
}

TEST(CudaSwapLeadingDimsTest, MatchesTheReference) {
  MF_REQUIRE_GPU();
  const Tensor x = RandomNormal({3, 4, 70}, 31);
  for (const DType in : {kF32, kBf16}) {
    for (const DType out_dtype : {kF32, kBf16}) {
      const Tensor x_in = RoundedTo(x, in);
      Tensor expected = Tensor::Zeros({4, 3, 70}, out_dtype);
      SwapLeadingDims(x_in.To(in), &expected, CpuStream());
      Tensor got = Poisoned({4, 3, 70}, out_dtype);
      SwapLeadingDims(ToGpu(x_in, in), &got, GpuStream());
      EXPECT_TENSOR_NEAR(ToHostF32(got), ToHostF32(expected), 0, 0)
          << DTypeName(in) << " to " << DTypeName(out_dtype);
    }
  }
}

// Without a GPU: the selector, and the cuDNN queries' answers.
TEST(AttentionBackendTest, SelectorKeepsTheChoice) {
  const AttentionBackend saved = GetAttentionBackend();
  EXPECT_EQ(saved, kAuto);  // the default
  for (AttentionBackend b : {kCudnn, kFlash, kRows, kAuto}) {
    SetAttentionBackend(b);
    EXPECT_EQ(GetAttentionBackend(), b);
  }
  SetAttentionBackend(saved);
}

TEST(AttentionBackendTest, CudnnIsNotAvailableOnTheCpu) {
  const absl::Status s = CudnnAttentionAvailable(1, 128, 4, 2, 64, kBf16, Device::Cpu());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cpu"), std::string::npos) << s;
}

TEST(AttentionBackendTest, CudnnVersionIsReportedOrExplained) {
  const absl::StatusOr<std::string> version = CudnnVersion();
  if (version.ok()) {
    EXPECT_EQ(version->rfind("9.", 0), 0u) << *version;
  } else {
    EXPECT_EQ(version.status().code(), absl::StatusCode::kUnavailable) << version.status();
    EXPECT_FALSE(version.status().message().empty());
  }
}

TEST(AttentionBackendTest, CudnnRefusesWithoutGpu) {
  if (::moefold::cuda::DeviceCount() > 0) GTEST_SKIP() << "a GPU is present";
  const absl::Status s = CudnnAttentionAvailable(1, 128, 4, 2, 64, kBf16, Gpu());
  EXPECT_FALSE(s.ok()) << "cuDNN plans need a GPU";
}

}  // namespace
}  // namespace moefold::ops
