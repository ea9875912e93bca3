// Dense GEMM through cuBLASLt: a row-major C = op(A)·op(B) is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ,
// so A and B swap places in the call. Handles are per device, workspaces per stream (32 MiB, kept),
// and the heuristic's algorithm is cached per bucket of shapes (blas.h) in a bounded LRU cache.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <compare>
#include <iterator>
#include <list>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>

#include "core/gpu_error.h"
#include "ops/cuda/blas.h"
#include "ops/cuda/check.h"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

cudaDataType_t CudaType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    default:
      MF_CHECK(false) << "GEMM: unsupported dtype " << DTypeName(dtype);
  }
  return CUDA_R_32F;
}

// The largest power of two (≤ cap) dividing `bytes`.
uint32_t PowerOfTwoDividing(uint64_t bytes, uint32_t cap) {
  uint32_t a = cap;
  while (a > 1 && bytes % a != 0) a /= 2;
  return a;
}

// Alignment in bytes (≤ 256) of every matrix of a batch: the first one's address and the stride.
uint32_t Alignment(const void* ptr, int64_t batch, int64_t stride, size_t elem) {
  const uint32_t a = PowerOfTwoDividing(reinterpret_cast<uintptr_t>(ptr), 256);
  if (batch <= 1) return a;
  return std::min(a, PowerOfTwoDividing(static_cast<uint64_t>(stride) * elem, 256));
}

// Alignment in bytes (≤ 16, what vector loads and TMA care about) of a leading dimension.
uint32_t LdAlignment(int64_t ld, size_t elem) {
  return PowerOfTwoDividing(static_cast<uint64_t>(ld) * elem, 16);
}

// Everything that selects an algorithm, with m and k bucketed (blas.h).
struct PlanKey {
  int device;
  int64_t m_bucket, n, k_bucket, batch;
  bool trans_a, trans_b, bias;
  DType ab_dtype, c_dtype;
  uint32_t align_a, align_b, align_c, align_bias;
  uint32_t ld_align_a, ld_align_b, ld_align_c;
  auto operator<=>(const PlanKey&) const = default;
};

// The exact shape of one call, as far as the plan's algorithm could object to it.
struct ExactShape {
  int64_t m, k, lda, ldb, ldc, stride_a, stride_b, stride_c;
  auto operator<=>(const ExactShape&) const = default;
};

struct Plan {
  cublasLtMatmulDescOpaque_t op{};  // compute type, transposes, epilogue, bias type
  bool has_algo = false;            // the bucket's heuristic answered
  cublasLtMatmulAlgo_t algo{};
  // Exact shapes seen: use the plan's algorithm (own == false) or their own (own == true).
  struct Choice {
    bool own = false;
    cublasLtMatmulAlgo_t algo{};
  };
  std::map<ExactShape, Choice> shapes;
};

struct Handles {
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  std::unordered_map<void*, Tensor> workspaces;  // by stream
};

// Everything process-wide lives here, created on first use and never destroyed. Plans sit in an
// LRU list (front = most recent) indexed by key; list nodes never move, so the descriptors inside
// them keep their addresses.
struct Registry {
  std::mutex mutex;
  std::map<int, Handles> devices;
  using Lru = std::list<std::pair<PlanKey, Plan>>;
  Lru lru;
  std::map<PlanKey, Lru::iterator> index;
  GemmPlanStats stats;
};

Registry& GetRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

Handles& HandlesLocked(Registry& r, const Stream& stream) {
  Handles& h = r.devices[stream.device().index];
  if (h.lt == nullptr) MF_CUBLAS_CHECK(cublasLtCreate(&h.lt));
  if (h.blas == nullptr) MF_CUBLAS_CHECK(cublasCreate(&h.blas));
  if (h.workspaces.find(stream.native()) == h.workspaces.end()) {
    h.workspaces[stream.native()] =
        Tensor::Empty({static_cast<int64_t>(kWorkspaceBytes)}, DType::kU8, stream.device());
  }
  return h;
}

void SetAttr(cublasLtMatmulDesc_t op, cublasLtMatmulDescAttributes_t attr, const void* value,
             size_t size) {
  MF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, attr, value, size));
}

// The three column-major layouts of a problem (Lt's A is our b, Lt's B is our a, D is n×m),
// initialised in place: no allocation per call. `s` gives m, k, the leading dimensions and the
// batch strides (the exact call's, or a plan's bucket shape); the rest comes from `g`.
struct Layouts {
  cublasLtMatrixLayoutOpaque_t a{}, b{}, c{};

  Layouts(const GemmArgs& g, const ExactShape& s) {
    const cudaDataType_t ab = CudaType(g.ab_dtype), cd = CudaType(g.c_dtype);
    const uint64_t a_rows = g.trans_b ? s.k : g.n, a_cols = g.trans_b ? g.n : s.k;
    const uint64_t b_rows = g.trans_a ? s.m : s.k, b_cols = g.trans_a ? s.k : s.m;
    MF_CUBLAS_CHECK(cublasLtMatrixLayoutInit(&a, ab, a_rows, a_cols, s.ldb));
    MF_CUBLAS_CHECK(cublasLtMatrixLayoutInit(&b, ab, b_rows, b_cols, s.lda));
    MF_CUBLAS_CHECK(cublasLtMatrixLayoutInit(&c, cd, g.n, s.m, s.ldc));
    if (g.batch > 1) {
      SetBatch(&a, g.batch, s.stride_b);
      SetBatch(&b, g.batch, s.stride_a);
      SetBatch(&c, g.batch, s.stride_c);
    }
  }

  static void SetBatch(cublasLtMatrixLayoutOpaque_t* layout, int64_t batch, int64_t stride) {
    const int32_t count = static_cast<int32_t>(batch);
    MF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                     &count, sizeof(count)));
    MF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
};

ExactShape ShapeOf(const GemmArgs& g) {
  return ExactShape{g.m, g.k, g.lda, g.ldb, g.ldc, g.stride_a, g.stride_b, g.stride_c};
}

std::string Describe(const GemmArgs& g, const PlanKey& key) {
  std::ostringstream s;
  s << "m=" << g.m << " n=" << g.n << " k=" << g.k << " batch=" << g.batch
    << " trans_a=" << g.trans_a << " trans_b=" << g.trans_b << " lda=" << g.lda << " ldb=" << g.ldb
    << " ldc=" << g.ldc << " align a/b/c=" << key.align_a << "/" << key.align_b << "/"
    << key.align_c << " " << DTypeName(g.ab_dtype) << "→" << DTypeName(g.c_dtype)
    << (g.bias ? " with bias" : "");
  return s.str();
}

// The heuristic's first answer for the layouts, or false when it has none ("no algorithm" comes
// back either as zero results or as CUBLAS_STATUS_NOT_SUPPORTED).
bool QueryHeuristic(Registry& r, cublasLtHandle_t lt, Plan& plan, Layouts& layouts,
                    const PlanKey& key, cublasLtMatmulAlgo_t* algo) {
  cublasLtMatmulPreferenceOpaque_t pref{};
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceInit(&pref));
  const uint64_t workspace = kWorkspaceBytes;
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      &pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  // Lt's A is our b, Lt's B is our a.
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      &pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_b, sizeof(key.align_b)));
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      &pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_a, sizeof(key.align_a)));
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      &pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_c, sizeof(key.align_c)));
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      &pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_c, sizeof(key.align_c)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  ++r.stats.heuristic_queries;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      lt, &plan.op, &layouts.a, &layouts.b, &layouts.c, &layouts.c, &pref, 1, &result, &found);
  if (status != CUBLAS_STATUS_NOT_SUPPORTED) MF_CUBLAS_CHECK(status);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    return false;
  }
  *algo = result.algo;
  return true;
}

// A new plan for `key`: the descriptor, and the heuristic's algorithm for the bucket's largest
// shape (m and k at their bucket ceilings; a leading dimension that must hold a bucketed dimension
// grows with it, keeping its alignment). cublasLtMatmulAlgoGetHeuristic reads the bias pointer's
// value to learn its alignment (it never dereferences it; cublasLt.h,
// CUBLASLT_MATMUL_DESC_BIAS_POINTER): it is set before the query, or a NULL pointer would look
// perfectly aligned.
void InitPlan(Registry& r, cublasLtHandle_t lt, const GemmArgs& g, const PlanKey& key, Plan& plan) {
  MF_CUBLAS_CHECK(cublasLtMatmulDescInit(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  SetAttr(&plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a));
  SetAttr(&plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b));
  if (g.bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    SetAttr(&plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
    const cudaDataType_t bias_type = CudaType(g.c_dtype);
    SetAttr(&plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type));
    SetAttr(&plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias));
  }
  const int64_t m = key.m_bucket, k = key.k_bucket;
  const size_t ab_elem = DTypeSize(g.ab_dtype), c_elem = DTypeSize(g.c_dtype);
  // A row-major operand of `cols` columns at the bucket's shape needs a leading dimension ≥ cols.
  // The query's is the smallest one of exactly the call's alignment class, so the query is a
  // function of the key alone (and equals the call's ld for contiguous, unbucketed operands).
  auto ld_for = [](int64_t cols, uint32_t ld_align, size_t elem) {
    const int64_t unit = std::max<int64_t>(1, ld_align / static_cast<int64_t>(elem));
    int64_t ld = (cols + unit - 1) / unit * unit;
    if (ld_align < 16 && (static_cast<uint64_t>(ld) * elem) % (2 * ld_align) == 0) ld += unit;
    return ld;
  };
  ExactShape s;
  s.m = m;
  s.k = k;
  s.lda = ld_for(g.trans_a ? m : k, key.ld_align_a, ab_elem);
  s.ldb = ld_for(g.trans_b ? k : g.n, key.ld_align_b, ab_elem);
  s.ldc = ld_for(g.n, key.ld_align_c, c_elem);
  // Batch strides grow so the bucket's larger matrices do not overlap.
  s.stride_a = std::max(g.stride_a, s.lda * (g.trans_a ? k : m));
  s.stride_b = std::max(g.stride_b, s.ldb * (g.trans_b ? g.n : k));
  s.stride_c = std::max(g.stride_c, s.ldc * m);
  Layouts layouts(g, s);
  plan.has_algo = QueryHeuristic(r, lt, plan, layouts, key, &plan.algo);
}

// The plan of `key`, made most recently used; created (evicting the least recently used plan past
// kMaxGemmPlans) on a miss.
Plan& FindPlan(Registry& r, cublasLtHandle_t lt, const GemmArgs& g, const PlanKey& key) {
  auto it = r.index.find(key);
  if (it != r.index.end()) {
    r.lru.splice(r.lru.begin(), r.lru, it->second);
    return it->second->second;
  }
  r.lru.emplace_front(key, Plan());
  r.index.emplace(key, r.lru.begin());
  InitPlan(r, lt, g, key, r.lru.front().second);
  while (static_cast<int64_t>(r.lru.size()) > kMaxGemmPlans) {
    r.index.erase(r.lru.back().first);
    r.lru.pop_back();
    ++r.stats.evictions;
  }
  r.stats.plans = static_cast<int64_t>(r.lru.size());
  return r.lru.front().second;
}

// The algorithm for the exact shape: the plan's, once cublasLtMatmulAlgoCheck accepted it for this
// shape (with a workspace that fits), else the heuristic's answer for the exact shape.
const cublasLtMatmulAlgo_t& AlgoFor(Registry& r, cublasLtHandle_t lt, const GemmArgs& g,
                                    const PlanKey& key, Plan& plan, Layouts& layouts) {
  const ExactShape shape = ShapeOf(g);
  auto it = plan.shapes.find(shape);
  if (it != plan.shapes.end()) return it->second.own ? it->second.algo : plan.algo;
  if (static_cast<int64_t>(plan.shapes.size()) >= kMaxCheckedShapesPerPlan) plan.shapes.clear();
  Plan::Choice choice;
  bool accepted = false;
  if (plan.has_algo) {
    cublasLtMatmulHeuristicResult_t result{};
    ++r.stats.algo_checks;
    const cublasStatus_t status = cublasLtMatmulAlgoCheck(
        lt, &plan.op, &layouts.a, &layouts.b, &layouts.c, &layouts.c, &plan.algo, &result);
    accepted = status == CUBLAS_STATUS_SUCCESS && result.workspaceSize <= kWorkspaceBytes;
  }
  if (!accepted) {
    ++r.stats.algo_rejections;
    choice.own = true;
    MF_CHECK(QueryHeuristic(r, lt, plan, layouts, key, &choice.algo))
        << "GEMM: cuBLASLt has no algorithm for " << Describe(g, key);
  }
  it = plan.shapes.emplace(shape, choice).first;
  return it->second.own ? it->second.algo : plan.algo;
}

}  // namespace

void WithBlasHandle(const Stream& stream, const std::function<void(void* handle)>& fn) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  Handles& h = HandlesLocked(r, stream);
  MF_CUBLAS_CHECK(cublasSetStream(h.blas, static_cast<cudaStream_t>(stream.native())));
  Tensor& workspace = h.workspaces[stream.native()];
  MF_CUBLAS_CHECK(cublasSetWorkspace(h.blas, workspace.raw_data(), kWorkspaceBytes));
  fn(h.blas);
}

GemmPlanStats GetGemmPlanStats() {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.stats;
}

void LtMatmul(const GemmArgs& g, const Stream& stream) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  MF_CHECK(g.batch == 1 || g.bias == nullptr) << "GEMM: a bias with a batch of " << g.batch;
  MF_CHECK(g.batch <= INT32_MAX) << "GEMM: batch " << g.batch;
  const cudaStream_t s = static_cast<cudaStream_t>(stream.native());
  if (g.k == 0) {
    // Empty inner dimension: C = beta·C (cuBLASLt rejects k = 0); Gemm scales other betas.
    MF_CHECK(g.beta == 0.0f || g.beta == 1.0f) << "GEMM: k = 0 with beta " << g.beta;
    if (g.beta == 0.0f) {
      const size_t elem = DTypeSize(g.c_dtype);
      for (int64_t i = 0; i < g.batch; ++i) {
        MF_CUDA_CHECK(cudaMemset2DAsync(static_cast<char*>(g.c) + i * g.stride_c * elem,
                                        g.ldc * elem, 0, g.n * elem, g.m, s));
      }
    }
    return;
  }
  const size_t ab_elem = DTypeSize(g.ab_dtype), c_elem = DTypeSize(g.c_dtype);
  const PlanKey key{stream.device().index,
                    PlanBucket(g.m),
                    g.n,
                    PlanBucket(g.k),
                    g.batch,
                    g.trans_a,
                    g.trans_b,
                    g.bias != nullptr,
                    g.ab_dtype,
                    g.c_dtype,
                    Alignment(g.a, g.batch, g.stride_a, ab_elem),
                    Alignment(g.b, g.batch, g.stride_b, ab_elem),
                    Alignment(g.c, g.batch, g.stride_c, c_elem),
                    g.bias ? Alignment(g.bias, 1, 0, c_elem) : 0,
                    LdAlignment(g.lda, ab_elem),
                    LdAlignment(g.ldb, ab_elem),
                    LdAlignment(g.ldc, c_elem)};
  Layouts layouts(g, ShapeOf(g));
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  Handles& h = HandlesLocked(r, stream);
  Plan& plan = FindPlan(r, h.lt, g, key);
  if (g.bias != nullptr) {
    SetAttr(&plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias));
  }
  const cublasLtMatmulAlgo_t& algo = AlgoFor(r, h.lt, g, key, plan, layouts);
  Tensor& workspace = h.workspaces[stream.native()];
  MF_CUBLAS_CHECK(cublasLtMatmul(h.lt, &plan.op, &g.alpha, g.b, &layouts.a, g.a, &layouts.b,
                                 &g.beta, g.c, &layouts.c, g.c, &layouts.c, &algo,
                                 workspace.raw_data(), kWorkspaceBytes, s));
}

namespace {

// Shapes of a row-major GEMM call on the GPU, checked like the CPU reference.
GemmArgs CheckedArgs(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, float alpha,
                     float beta, Tensor* c, const Stream& stream, const char* op) {
  MF_CHECK(c != nullptr) << op << ": output c is null";
  const Device dev = a.device();
  CheckStream(stream, dev, op);
  CheckActivation(a, dev, op, "a");
  CheckOn(b, dev, op, "b");
  CheckDType(b, a.dtype(), op, "b");
  CheckActivation(*c, dev, op, "c");
  MF_CHECK(c->dtype() == a.dtype() || c->dtype() == DType::kF32)
      << op << ": c must be " << DTypeName(a.dtype()) << " or f32, got " << c->DebugString();
  CheckRank(a, 2, op, "a");
  CheckRank(b, 2, op, "b");
  CheckRank(*c, 2, op, "c");
  GemmArgs g;
  g.m = trans_a ? a.dim(1) : a.dim(0);
  g.k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  g.n = trans_b ? b.dim(0) : b.dim(1);
  MF_CHECK(g.k == kb && c->dim(0) == g.m && c->dim(1) == g.n)
      << op << ": op(a) " << (trans_a ? "ᵀ" : "") << a.DebugString() << " · op(b) "
      << (trans_b ? "ᵀ" : "") << b.DebugString() << " does not fit c " << c->DebugString();
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.a = a.raw_data();
  g.lda = a.dim(1);
  g.b = b.raw_data();
  g.ldb = b.dim(1);
  g.c = c->raw_data();
  g.ldc = c->dim(1);
  g.ab_dtype = a.dtype();
  g.c_dtype = c->dtype();
  g.alpha = alpha;
  g.beta = beta;
  return g;
}

}  // namespace

void Gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, float alpha, float beta,
          Tensor* c, Stream& stream) {
  const GemmArgs g = CheckedArgs(a, trans_a, b, trans_b, alpha, beta, c, stream, "Gemm");
  if (g.k == 0 && beta != 0.0f && beta != 1.0f) {
    Scale(beta, c, stream);
    return;
  }
  LtMatmul(g, stream);
}

void LinearBiasForward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor* y,
                       Stream& stream) {
  constexpr const char* kOp = "LinearBiasForward";
  GemmArgs g = CheckedArgs(x, false, w, true, 1.0f, 0.0f, y, stream, kOp);
  CheckIn(bias, x.device(), y->dtype(), {w.dim(0)}, kOp, "bias");
  g.bias = bias.raw_data();
  MF_CHECK(g.k > 0) << kOp << ": empty inner dimension";
  LtMatmul(g, stream);
}

}  // namespace moefold::ops::cuda
