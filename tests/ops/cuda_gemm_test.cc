// GPU parity of the cuBLASLt GEMM (every transpose, alpha/beta, bf16 with bf16 or f32 output, the
// bias epilogue, the linear layer's backward, row counts across the plan cache's buckets, eviction)
// against the OpenBLAS reference (skips without a GPU), and the plan cache's bucket rule.
#include "ops/gemm.h"

#include <algorithm>
#include <set>
#include <vector>

#include "ops/cuda/blas.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::testing::DTypeName;
using ::moefold::testing::Gpu;
using ::moefold::testing::GpuStream;
using ::moefold::testing::ParityNear;
using ::moefold::testing::Poisoned;
using ::moefold::testing::RandomNormal;
using ::moefold::testing::RoundedTo;
using ::moefold::testing::ToGpu;

class CudaGemmTest : public ::testing::TestWithParam<DType> {};

TEST_P(CudaGemmTest, EveryTransposeWithAlphaAndBeta) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t m = 33, n = 70, k = 48;
  for (bool trans_a : {false, true}) {
    for (bool trans_b : {false, true}) {
      const Tensor a = RoundedTo(RandomNormal(trans_a ? Shape{k, m} : Shape{m, k}, 1), dt);
      const Tensor b = RoundedTo(RandomNormal(trans_b ? Shape{n, k} : Shape{k, n}, 2), dt);
      // c in a's dtype, and in f32 (how bf16 weight gradients accumulate).
      for (DType c_dt : {dt, DType::kF32}) {
        const Tensor c0 = RoundedTo(RandomNormal({m, n}, 3), c_dt);
        Tensor c = c0.Clone();
        Gemm(a, trans_a, b, trans_b, 0.7f, 0.3f, &c, CpuStream());
        Tensor c_gpu = ToGpu(c0, c_dt);
        Gemm(ToGpu(a, dt), trans_a, ToGpu(b, dt), trans_b, 0.7f, 0.3f, &c_gpu, GpuStream());
        EXPECT_TRUE(ParityNear(c_gpu, c, c_dt == DType::kF32 ? dt : c_dt))
            << "trans_a " << trans_a << " trans_b " << trans_b << " c " << moefold::DTypeName(c_dt);
        // beta = 0 ignores C's old contents, even NaN.
        Tensor fresh = Poisoned({m, n}, c_dt);
        Tensor c_beta0 = Tensor::Zeros({m, n}, DType::kF32);
        Gemm(a, trans_a, b, trans_b, 1.0f, 0.0f, &c_beta0, CpuStream());
        Gemm(ToGpu(a, dt), trans_a, ToGpu(b, dt), trans_b, 1.0f, 0.0f, &fresh, GpuStream());
        EXPECT_TRUE(ParityNear(fresh, c_beta0, c_dt == DType::kF32 ? dt : c_dt));
      }
    }
  }
}

TEST_P(CudaGemmTest, LinearWithBiasAndBackward) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const Tensor x = RoundedTo(RandomNormal({29, 64}, 4), dt);
  const Tensor w = RoundedTo(RandomNormal({40, 64}, 5), dt);
  const Tensor bias = RoundedTo(RandomNormal({40}, 6), dt);
  Tensor y = Tensor::Zeros({29, 40}, DType::kF32);
  LinearBiasForward(x, w, bias, &y, CpuStream());
  Tensor y_gpu = Poisoned({29, 40}, dt);
  const Tensor x_gpu = ToGpu(x, dt), w_gpu = ToGpu(w, dt);
  LinearBiasForward(x_gpu, w_gpu, ToGpu(bias, dt), &y_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(y_gpu, y, dt));

  const Tensor d_y = RoundedTo(RandomNormal({29, 40}, 7), dt);
  Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32);
  const Tensor d_w0 = RandomNormal(w.shape(), 8);
  Tensor d_w = d_w0.Clone();
  LinearBackward(x, w, d_y, &d_x, &d_w, CpuStream());
  Tensor d_x_gpu = Poisoned(x.shape(), dt);
  Tensor d_w_gpu = d_w0.To(Gpu());  // f32 gradient accumulator
  LinearBackward(x_gpu, w_gpu, ToGpu(d_y, dt), &d_x_gpu, &d_w_gpu, GpuStream());
  EXPECT_TRUE(ParityNear(d_x_gpu, d_x, dt));
  EXPECT_TRUE(ParityNear(d_w_gpu, d_w, dt));
}

TEST(CudaGemmTest, EmptyInnerDimensionScalesC) {
  MF_REQUIRE_GPU();
  const Tensor a = Tensor::Zeros({4, 0}, DType::kF32), b = Tensor::Zeros({0, 5}, DType::kF32);
  const Tensor c0 = RandomNormal({4, 5}, 9);
  for (float beta : {0.0f, 1.0f, 0.5f}) {
    Tensor c = c0.Clone();
    Gemm(a, false, b, false, 1.0f, beta, &c, CpuStream());
    Tensor c_gpu = c0.To(Gpu());
    Gemm(a.To(Gpu()), false, b.To(Gpu()), false, 1.0f, beta, &c_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(c_gpu, c, DType::kF32)) << "beta " << beta;
  }
}

// Row counts across the buckets: 1, primes, bucket edges and their neighbours.
const std::vector<int64_t> kRowCounts = {1,   2,   3,   5,   7,   13,  31,   64,   97,   127,
                                         128, 129, 131, 257, 383, 521, 1031, 1283, 4099, 8209};

// The plan of a bucket is chosen for the bucket's largest shape and used (after
// cublasLtMatmulAlgoCheck) for every count in it: each count must still give the right product, as
// M of a forward or d_x GEMM and as K of a weight gradient.
TEST_P(CudaGemmTest, EveryRowCountThroughThePlanCache) {
  MF_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t in = 96, out = 80;
  const Tensor w = RoundedTo(RandomNormal({out, in}, 10), dt);
  const Tensor w_gpu = ToGpu(w, dt);
#ifdef MOEFOLD_HAVE_CUDA
  const cuda::GemmPlanStats before = cuda::GetGemmPlanStats();
#endif
  std::set<int64_t> buckets;
  for (int64_t rows : kRowCounts) {
    buckets.insert(cuda::PlanBucket(rows));
    const Tensor x = RoundedTo(RandomNormal({rows, in}, 11 + rows), dt);
    const Tensor d_y = RoundedTo(RandomNormal({rows, out}, 12 + rows), dt);
    const Tensor x_gpu = ToGpu(x, dt), d_y_gpu = ToGpu(d_y, dt);
    // y = x·Wᵀ: M = rows.
    Tensor y = Tensor::Zeros({rows, out}, DType::kF32);
    LinearForward(x, w, &y, CpuStream());
    Tensor y_gpu = Poisoned({rows, out}, dt);
    LinearForward(x_gpu, w_gpu, &y_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(y_gpu, y, dt)) << "forward, rows " << rows;
    // d_x = d_y·W (M = rows) and d_w += d_yᵀ·x (K = rows) into an f32 accumulator.
    const Tensor d_w0 = RandomNormal(w.shape(), 13);
    Tensor d_x = Tensor::Zeros(x.shape(), DType::kF32), d_w = d_w0.Clone();
    LinearBackward(x, w, d_y, &d_x, &d_w, CpuStream());
    Tensor d_x_gpu = Poisoned(x.shape(), dt), d_w_gpu = d_w0.To(Gpu());
    LinearBackward(x_gpu, w_gpu, d_y_gpu, &d_x_gpu, &d_w_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(d_x_gpu, d_x, dt)) << "d_x, rows " << rows;
    EXPECT_TRUE(ParityNear(d_w_gpu, d_w, dt)) << "d_w, rows " << rows;
  }
#ifdef MOEFOLD_HAVE_CUDA
  // Three GEMM families (forward, d_x, d_w), each asked about once per bucket; a count its
  // bucket's algorithm rejected is asked about once more.
  const cuda::GemmPlanStats after = cuda::GetGemmPlanStats();
  const int64_t queries = after.heuristic_queries - before.heuristic_queries;
  const int64_t rejections = after.algo_rejections - before.algo_rejections;
  EXPECT_LE(queries, 3 * static_cast<int64_t>(buckets.size()) + rejections);
  EXPECT_GT(after.algo_checks, before.algo_checks);
  EXPECT_LE(after.plans, cuda::kMaxGemmPlans);
  // The same counts again: every plan and exact shape is known, nothing is asked.
  for (int64_t rows : kRowCounts) {
    const Tensor x_gpu = ToGpu(RoundedTo(RandomNormal({rows, in}, 11 + rows), dt), dt);
    Tensor y_gpu = Poisoned({rows, out}, dt);
    LinearForward(x_gpu, w_gpu, &y_gpu, GpuStream());
  }
  EXPECT_EQ(cuda::GetGemmPlanStats().heuristic_queries, after.heuristic_queries);
  EXPECT_EQ(cuda::GetGemmPlanStats().algo_checks, after.algo_checks);
#endif
}

#ifdef MOEFOLD_HAVE_CUDA
// More distinct shapes than the cache keeps: it stays bounded, evicts the least recently used, and
// a shape whose plan was evicted is planned again and still right.
TEST(CudaGemmPlanCacheTest, StaysBoundedAndReplansEvictedShapes) {
  MF_REQUIRE_GPU();
  const int64_t rows = 8, in = 16;
  const Tensor x = RandomNormal({rows, in}, 20);
  const Tensor x_gpu = x.To(Gpu());
  auto check = [&](int64_t out) {
    const Tensor w = RandomNormal({out, in}, 21 + out);
    Tensor y = Tensor::Zeros({rows, out}, DType::kF32);
    LinearForward(x, w, &y, CpuStream());
    Tensor y_gpu = Poisoned({rows, out}, DType::kF32);
    LinearForward(x_gpu, w.To(Gpu()), &y_gpu, GpuStream());
    EXPECT_TRUE(ParityNear(y_gpu, y, DType::kF32)) << "out " << out;
  };
  const cuda::GemmPlanStats before = cuda::GetGemmPlanStats();
  // N is not bucketed: every width is a plan of its own.
  for (int64_t out = 1; out <= cuda::kMaxGemmPlans + 40; ++out) check(out);
  const cuda::GemmPlanStats after = cuda::GetGemmPlanStats();
  EXPECT_EQ(after.plans, cuda::kMaxGemmPlans);
  EXPECT_GE(after.evictions - before.evictions, 40);
  check(1);  // the least recently used: evicted above
  EXPECT_GT(cuda::GetGemmPlanStats().heuristic_queries, after.heuristic_queries);
}
#endif

// The bucket rule itself (no GPU needed): a bucket holds its members, never shrinks a count, and
// keeps the counts up to 2^20 in 127 buckets.
TEST(GemmPlanBucketTest, BucketsAreCeilingsOfBoundedWidth) {
  EXPECT_EQ(cuda::PlanBucket(0), 0);
  EXPECT_EQ(cuda::PlanBucket(1), 1);
  EXPECT_EQ(cuda::PlanBucket(3), 4);
  EXPECT_EQ(cuda::PlanBucket(100), 128);
  EXPECT_EQ(cuda::PlanBucket(129), 256);
  EXPECT_EQ(cuda::PlanBucket(1000), 1024);
  EXPECT_EQ(cuda::PlanBucket(2816), 2816);
  EXPECT_EQ(cuda::PlanBucket(5632), 5632);
  EXPECT_EQ(cuda::PlanBucket(8192), 8192);
  EXPECT_EQ(cuda::PlanBucket(8193), 9216);
  EXPECT_EQ(cuda::PlanBucket(16385), 18432);
  std::set<int64_t> buckets;
  int64_t previous = 0;
  for (int64_t n = 1; n <= (int64_t{1} << 20); ++n) {
    const int64_t b = cuda::PlanBucket(n);
    ASSERT_GE(b, n);
    ASSERT_GE(b, previous);
    ASSERT_EQ(cuda::PlanBucket(b), b) << n;  // the ceiling is a member of its own bucket
    if (n > 128) {
      ASSERT_LE(b - n, std::max<int64_t>(127, n / 8)) << n;
    }
    previous = b;
    buckets.insert(b);
  }
  EXPECT_EQ(buckets.size(), 127u);
}

INSTANTIATE_TEST_SUITE_P(DTypes, CudaGemmTest, ::testing::Values(DType::kF32, DType::kBF16),
                         DTypeName());

}  // namespace
}  // namespace moefold::ops
