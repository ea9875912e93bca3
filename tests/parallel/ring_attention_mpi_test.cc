// Ring attention under mpirun (CP = 1, 2 and 4) against single-rank causal attention on the whole
// sequence: each rank holds chunks i and 2·CP−1−i; outputs, log-sum-exps and the gradients of Q, K
// and V of its tokens must match (GQA: 4 query heads over 2 KV heads). In f32 and in bf16 (the
// reference is the one-rank bf16 op, which rounds once: so must the ring), over MPI and through the
// host-staged communicator, and on the GPU (ranks sharing it through host staging; skipped without
// one), where a shape with head dim 64 and 64-token chunks runs the flash kernels.
#include <algorithm>
#include <memory>
#include <ostream>
#include <string>

#include "core/cuda_runtime.h"
#include "gtest/gtest.h"
#include "ops/attention.h"
#include "parallel/host_staged_communicator.h"
#include "parallel/mpi_communicator.h"
#include "parallel/ring_attention.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

using ::moefold::testing::ParityNear;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToHostF32;

// Rows of x (B, S, H, D) f32 at `positions` along S.
Tensor Gather(const Tensor& x, const Tensor& positions) {
  const int64_t b = x.dim(0), s = x.dim(1), row = x.dim(2) * x.dim(3), n = positions.numel();
  Tensor out = Tensor::Empty({b, n, x.dim(2), x.dim(3)}, DType::kF32);
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t src = (bi * s + positions.data<int32_t>()[i]) * row;
      std::copy_n(x.data<float>() + src, row, out.data<float>() + (bi * n + i) * row);
    }
  }
  return out;
}

// Entries of lse (B, H, S) f32 at `positions` along S.
Tensor GatherLse(const Tensor& lse, const Tensor& positions) {
  const int64_t rows = lse.dim(0) * lse.dim(1), s = lse.dim(2), n = positions.numel();
  Tensor out = Tensor::Empty({lse.dim(0), lse.dim(1), n}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      out.data<float>()[r * n + i] = lse.data<float>()[r * s + positions.data<int32_t>()[i]];
    }
  }
  return out;
}

struct RingCase {
  std::string name;
  DType dtype;
  bool gpu;     // tensors on cuda:0 (through the host-staged communicator)
  bool staged;  // the host-staged communicator on CPU tensors
  int64_t batch, chunk, q_heads, kv_heads, dim;
};

void PrintTo(const RingCase& c, std::ostream* os) { *os << c.name; }

class RingAttentionTest : public ::testing::TestWithParam<RingCase> {};

TEST_P(RingAttentionTest, EqualsSingleRankAttentionForwardAndBackward) {
  const RingCase& c = GetParam();
  if (c.gpu) MF_REQUIRE_GPU();
  const DType dt = c.dtype;
  std::unique_ptr<Communicator> cp =
      std::make_unique<MpiCommunicator>(MpiCommunicator::World("cp"));
  if (c.gpu || c.staged) {
    cp = std::make_unique<HostStagedCommunicator>(std::move(cp), /*stage_host_tensors=*/!c.gpu);
  }
  const Device device = c.gpu ? Device::Cuda(0) : Device::Cpu();
  Stream& stream = DefaultStream(device);
  const int64_t b = c.batch, s = 2 * c.chunk * cp->size(), hq = c.q_heads, hkv = c.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  // Inputs at the values the dtype holds; the reference is the one-rank op in that dtype (on the
  // CPU, which emulates bf16).
  const Tensor q = RoundedTo(RandomNormal({b, s, hq, c.dim}, 1), dt);
  const Tensor k = RoundedTo(RandomNormal({b, s, hkv, c.dim}, 2), dt);
  const Tensor v = RoundedTo(RandomNormal({b, s, hkv, c.dim}, 3), dt);
  const Tensor d_out = RoundedTo(RandomNormal({b, s, hq, c.dim}, 4), dt);
  Tensor out_ref = Tensor::Empty(q.shape(), dt), lse_ref = Tensor::Empty({b, hq, s}, DType::kF32);
  ops::AttentionForward(q.To(dt), k.To(dt), v.To(dt), scale, &out_ref, &lse_ref, CpuStream());
  Tensor dq_ref = Tensor::Empty(q.shape(), dt), dk_ref = Tensor::Empty(k.shape(), dt);
  Tensor dv_ref = Tensor::Empty(v.shape(), dt);
  ops::AttentionBackward(q.To(dt), k.To(dt), v.To(dt), out_ref, lse_ref, d_out.To(dt), scale,
                         &dq_ref, &dk_ref, &dv_ref, CpuStream());

  const Tensor pos = ContextParallelPositions(s, cp->size(), cp->rank());
  const int64_t n = pos.numel();
  auto local = [&](const Tensor& x) { return Gather(x, pos).To(dt).To(device); };
  const Tensor q_local = local(q), k_local = local(k), v_local = local(v);
  Tensor out = Tensor::Empty(q_local.shape(), dt, device);
  Tensor lse = Tensor::Empty({b, hq, n}, DType::kF32, device);
  ASSERT_OK(RingAttentionForward(q_local, k_local, v_local, scale, *cp, &out, &lse, stream));
  Tensor dq = Tensor::Empty(q_local.shape(), dt, device);
  Tensor dk = Tensor::Empty(k_local.shape(), dt, device);
  Tensor dv = Tensor::Empty(v_local.shape(), dt, device);
  ASSERT_OK(RingAttentionBackward(q_local, k_local, v_local, out, lse, local(d_out), scale, *cp,
                                  &dq, &dk, &dv, stream));
  stream.Synchronize();

  const Tensor lse_expected = GatherLse(lse_ref, pos);
  const auto near = [&](const Tensor& actual, const Tensor& expected_whole, const char* what,
                        double f32_rtol, double f32_atol) {
    const Tensor expected = Gather(ToHostF32(expected_whole), pos);
    if (c.gpu) {
      EXPECT_TRUE(ParityNear(actual, expected, dt)) << what;
    } else if (dt == DType::kF32) {
      EXPECT_TENSOR_NEAR(actual, expected, f32_rtol, f32_atol) << what;
    } else {
      // Both round once from f32 values that differ only in the order of their sums: at most one
      // bf16 step (2⁻⁷ relative) apart.
      EXPECT_TENSOR_NEAR(ToHostF32(actual), expected, 1e-2, 1e-4) << what;
    }
  };
  near(out, out_ref, "out", 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(ToHostF32(lse), lse_expected, 1e-5, 1e-5) << "lse";
  near(dq, dq_ref, "d_q", 1e-4, 1e-5);
  near(dk, dk_ref, "d_k", 1e-4, 1e-5);
  near(dv, dv_ref, "d_v", 1e-4, 1e-5);
}

constexpr DType kF32 = DType::kF32;
constexpr DType kBf16 = DType::kBF16;

INSTANTIATE_TEST_SUITE_P(
    Layouts, RingAttentionTest,
    ::testing::Values(RingCase{"f32", kF32, false, false, 2, 2, 4, 2, 4},
                      RingCase{"bf16", kBf16, false, false, 2, 2, 4, 2, 4},
                      RingCase{"f32_mha_staged", kF32, false, true, 1, 3, 2, 2, 8},
                      RingCase{"bf16_mqa_staged", kBf16, false, true, 2, 2, 4, 1, 4},
                      RingCase{"gpu_f32_rows", kF32, true, false, 2, 2, 4, 2, 4},
                      RingCase{"gpu_bf16_rows", kBf16, true, false, 2, 3, 4, 2, 16},
                      RingCase{"gpu_bf16_flash", kBf16, true, false, 1, 64, 4, 2, 64}),
    [](const ::testing::TestParamInfo<RingCase>& info) { return info.param.name; });

TEST(RingAttentionLayoutTest, ChunkLayoutBalancesCausalWork) {
  // CP = 2, S = 8: rank 0 holds chunks 0 and 3 → positions 0,1,6,7; rank 1 chunks 1 and 2.
  const Tensor p0 = ContextParallelPositions(8, 2, 0), p1 = ContextParallelPositions(8, 2, 1);
  EXPECT_EQ(std::vector<int32_t>(p0.data<int32_t>(), p0.data<int32_t>() + 4),
            (std::vector<int32_t>{0, 1, 6, 7}));
  EXPECT_EQ(std::vector<int32_t>(p1.data<int32_t>(), p1.data<int32_t>() + 4),
            (std::vector<int32_t>{2, 3, 4, 5}));
}

}  // namespace
}  // namespace moefold::parallel
