// cuBLASLt / cuBLAS plumbing shared by the dense and the grouped GEMM (internal to ops/cuda):
// row-major problems mapped onto the libraries' column-major calls, per-device handles, per-stream
// workspaces and a bounded cache of chosen algorithms keyed by bucketed row counts. No CUDA types
// here (the bucket rule is inline so a CPU test can pin it down).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops::cuda {

// C = alpha·op(A)·op(B) + beta·C (+ bias[j] on every row's column j), all row-major on the GPU.
// op(A) is m×k; A is stored m×k (k×m when trans_a) with row stride lda; likewise B, C (ldc).
// batch > 1 runs `batch` such products in one strided-batched matmul: matrix i of A starts
// stride_a elements after matrix i − 1 (likewise B, C); a bias is not allowed then.
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* c = nullptr;
  int64_t ldc = 0;
  DType ab_dtype = DType::kF32, c_dtype = DType::kF32;
  float alpha = 1.0f, beta = 0.0f;
  const void* bias = nullptr;  // (n) in c_dtype, or nullptr
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

// One cuBLASLt matmul on `stream` (f32 accumulation; f32 inputs stay f32, no TF32). k == 0 sets
// C to beta·C for beta 0 or 1 (callers scale other betas themselves).
//
// Algorithm choice: cuBLASLt's heuristic is asked once per plan key — dtypes, transposes, n, the
// batch count, pointer and leading-dimension alignments, and m and k rounded up by
// PlanBucket — for the bucket's largest shape, so an expert's ever-changing row count reuses a
// few plans and the choice never depends on which shapes came first. The first time a plan's
// algorithm meets an exact shape, cublasLtMatmulAlgoCheck confirms it (a rejected shape gets its
// own heuristic answer, remembered in the plan). At most kMaxGemmPlans plans are kept (least
// recently used evicted); layouts of the exact shape are built per call on the stack.
void LtMatmul(const GemmArgs& args, const Stream& stream);

// Runs fn(cublasHandle_t) with the stream's GPU's cuBLAS handle bound to `stream` and its
// workspace, holding the handles' lock (one handle per device is shared by every stream).
void WithBlasHandle(const Stream& stream, const std::function<void(void* handle)>& fn);

// How many plans the cache keeps, and how many exact shapes each plan remembers as checked (enough
// for every count of a bucket up to 8192 rows, so an expert's counts are checked once per run; a
// plan that meets more forgets them all and checks again).
inline constexpr int64_t kMaxGemmPlans = 512;
inline constexpr int64_t kMaxCheckedShapesPerPlan = 256;

// The bucket (its largest member) of a row count n ≥ 1, the rule of the plan key: powers of two
// up to 128 (small GEMMs change kernels with every doubling), then multiples of 128 up to 8192
// (cuBLASLt's tiles are 64–256 rows, so the bucket's ceiling has the exact count's tiles and
// waves), then eight steps per octave (within 12.5%). Counts up to 2^20 fall in 127 buckets.
// n ≤ 0 is its own bucket.
inline int64_t PlanBucket(int64_t n) {
  if (n <= 0) return n;
  if (n <= 128) {
    int64_t p = 1;
    while (p < n) p *= 2;
    return p;
  }
  if (n <= 8192) return (n + 127) / 128 * 128;
  int64_t octave = 8192;  // the largest power of two below n
  while (octave * 2 < n) octave *= 2;
  const int64_t step = octave / 8;
  return (n + step - 1) / step * step;
}

// Counters of the plan cache of this process (for tests and benchmarks).
struct GemmPlanStats {
  int64_t plans = 0;              // kept now (≤ kMaxGemmPlans)
  int64_t heuristic_queries = 0;  // cublasLtMatmulAlgoGetHeuristic calls so far
  int64_t algo_checks = 0;        // cublasLtMatmulAlgoCheck calls so far
  int64_t algo_rejections = 0;    // exact shapes a plan's algorithm did not accept
  int64_t evictions = 0;          // plans dropped to stay within kMaxGemmPlans
};
GemmPlanStats GetGemmPlanStats();

}  // namespace moefold::ops::cuda
