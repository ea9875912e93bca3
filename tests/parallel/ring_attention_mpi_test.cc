// Ring attention under mpirun (CP = 2 and 4) against single-rank causal attention on the whole
// sequence: each rank holds chunks i and 2·CP−1−i; outputs, log-sum-exps and the gradients of Q, K
// and V of its tokens must match (GQA: 4 query heads over 2 KV heads).
#include "parallel/ring_attention.h"

#include <cmath>

#include "gtest/gtest.h"
#include "ops/attention.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

using ::moefold::testing::RandomNormal;

// Rows of x (B, S, H, D) at `positions` along S.
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

TEST(RingAttentionTest, EqualsSingleRankAttentionForwardAndBackward) {
  MpiCommunicator cp = MpiCommunicator::World("cp");
  const int64_t b = 2, s = 4 * cp.size(), hq = 4, hkv = 2, d = 4;
  const float scale = 0.5f;
  const Tensor q = RandomNormal({b, s, hq, d}, 1), k = RandomNormal({b, s, hkv, d}, 2);
  const Tensor v = RandomNormal({b, s, hkv, d}, 3), d_out = RandomNormal({b, s, hq, d}, 4);
  Tensor out_ref = Tensor::Empty({b, s, hq, d}, DType::kF32);
  Tensor lse_ref = Tensor::Empty({b, hq, s}, DType::kF32);
  ops::AttentionForward(q, k, v, scale, &out_ref, &lse_ref, CpuStream());
  Tensor dq_ref = Tensor::Empty(q.shape(), DType::kF32), dk_ref = Tensor::Empty(k.shape(), DType::kF32);
  Tensor dv_ref = Tensor::Empty(v.shape(), DType::kF32);
  ops::AttentionBackward(q, k, v, out_ref, lse_ref, d_out, scale, &dq_ref, &dk_ref, &dv_ref,
                         CpuStream());

  const Tensor pos = ContextParallelPositions(s, cp.size(), cp.rank());
  const int64_t n = pos.numel();
  const Tensor q_local = Gather(q, pos), k_local = Gather(k, pos), v_local = Gather(v, pos);
  Tensor out = Tensor::Empty(q_local.shape(), DType::kF32), lse = Tensor::Empty({b, hq, n}, DType::kF32);
  ASSERT_OK(RingAttentionForward(q_local, k_local, v_local, pos, scale, cp, &out, &lse));
  EXPECT_TENSOR_NEAR(out, Gather(out_ref, pos), 1e-5, 1e-6);
  // lse (B, Hq, S): compare this rank's positions.
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_NEAR(lse.data<float>()[(bi * hq + h) * n + i],
                    lse_ref.data<float>()[(bi * hq + h) * s + pos.data<int32_t>()[i]], 1e-5);
      }
    }
  }
  Tensor dq = Tensor::Empty(q_local.shape(), DType::kF32), dk = Tensor::Empty(k_local.shape(), DType::kF32);
  Tensor dv = Tensor::Empty(v_local.shape(), DType::kF32);
  ASSERT_OK(RingAttentionBackward(q_local, k_local, v_local, pos, out, lse, Gather(d_out, pos), scale,
                                  cp, &dq, &dk, &dv));
  EXPECT_TENSOR_NEAR(dq, Gather(dq_ref, pos), 1e-4, 1e-5);
  EXPECT_TENSOR_NEAR(dk, Gather(dk_ref, pos), 1e-4, 1e-5);
  EXPECT_TENSOR_NEAR(dv, Gather(dv_ref, pos), 1e-4, 1e-5);
}

TEST(RingAttentionTest, ChunkLayoutBalancesCausalWork) {
  // CP = 2, S = 8: rank 0 holds chunks 0 and 3 → positions 0,1,6,7; rank 1 chunks 1 and 2.
  const Tensor p0 = ContextParallelPositions(8, 2, 0), p1 = ContextParallelPositions(8, 2, 1);
  EXPECT_EQ(std::vector<int32_t>(p0.data<int32_t>(), p0.data<int32_t>() + 4),
            (std::vector<int32_t>{0, 1, 6, 7}));
  EXPECT_EQ(std::vector<int32_t>(p1.data<int32_t>(), p1.data<int32_t>() + 4),
            (std::vector<int32_t>{2, 3, 4, 5}));
}

}  // namespace
}  // namespace moefold::parallel
