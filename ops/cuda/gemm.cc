// Dense GEMM through cuBLASLt: a row-major C = op(A)·op(B) is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ,
// so A and B swap places in the call. Handles are per device, workspaces per stream (32 MiB, kept),
// and the heuristic's algorithm is cached per shape, dtype, epilogue and pointer alignment.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
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

uint32_t Alignment(const void* ptr) {
  const auto bits = reinterpret_cast<uintptr_t>(ptr);
  uint32_t a = 256;
  while (a > 1 && bits % a != 0) a /= 2;
  return a;
}

struct Handles {
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  std::unordered_map<void*, Tensor> workspaces;  // by stream
};

// Everything process-wide lives here, created on first use and never destroyed.
struct Registry {
  std::mutex mutex;
  std::map<int, Handles> devices;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int64_t, int64_t, int64_t, int, int,
                         bool, uint32_t, uint32_t, uint32_t, uint32_t, int>;
  std::map<Key, Plan> plans;
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

Registry::Plan MakePlan(cublasLtHandle_t lt, const GemmArgs& g, uint32_t align_a, uint32_t align_b,
                        uint32_t align_c, uint32_t align_bias) {
  Registry::Plan plan;
  MF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major view: Lt's A is our B, Lt's B is our A, D is n×m with leading dimension ldc.
  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  SetAttr(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a));
  SetAttr(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b));
  if (g.bias != nullptr) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    SetAttr(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
    const cudaDataType_t bias_type = CudaType(g.c_dtype);
    SetAttr(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type));
    // cublasLtMatmulAlgoGetHeuristic reads the bias pointer's value to learn its alignment (it
    // never dereferences it; cublasLt.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER): set it before the
    // query, or a NULL pointer looks perfectly aligned and the algorithm chosen may not accept the
    // real one. align_bias in the cache key keeps plans of different bias alignments apart.
    SetAttr(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias));
  }
  const cudaDataType_t ab = CudaType(g.ab_dtype), c = CudaType(g.c_dtype);
  const uint64_t a_rows = g.trans_b ? g.k : g.n, a_cols = g.trans_b ? g.n : g.k;
  const uint64_t b_rows = g.trans_a ? g.m : g.k, b_cols = g.trans_a ? g.k : g.m;
  MF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, ab, a_rows, a_cols, g.ldb));
  MF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, ab, b_rows, b_cols, g.lda));
  MF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, c, g.n, g.m, g.ldc));

  cublasLtMatmulPreference_t pref;
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = kWorkspaceBytes;
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  // Lt's A is our b, Lt's B is our a.
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_b, sizeof(align_b)));
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_a, sizeof(align_a)));
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));
  (void)align_bias;  // in the cache key; the heuristic sees the bias pointer itself (above)
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  // "No algorithm" comes back either as zero results or as CUBLAS_STATUS_NOT_SUPPORTED; both are
  // reported with the whole problem (the plain status check would only name the call).
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      lt, plan.op, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status != CUBLAS_STATUS_NOT_SUPPORTED) MF_CUBLAS_CHECK(status);
  MF_CHECK(status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS)
      << "GEMM: cuBLASLt has no algorithm for m=" << g.m << " n=" << g.n << " k=" << g.k
      << " trans_a=" << g.trans_a << " trans_b=" << g.trans_b << " lda=" << g.lda
      << " ldb=" << g.ldb << " ldc=" << g.ldc << " align a/b/c=" << align_a << "/" << align_b
      << "/" << align_c << " " << DTypeName(g.ab_dtype) << "→" << DTypeName(g.c_dtype)
      << (g.bias ? " with bias" : "");
  plan.algo = result.algo;
  return plan;
}

}  // namespace

void* BlasHandleFor(const Stream& stream) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  Handles& h = HandlesLocked(r, stream);
  MF_CUBLAS_CHECK(cublasSetStream(h.blas, static_cast<cudaStream_t>(stream.native())));
  Tensor& workspace = h.workspaces[stream.native()];
  MF_CUBLAS_CHECK(cublasSetWorkspace(h.blas, workspace.raw_data(), kWorkspaceBytes));
  return h.blas;
}

void LtMatmul(const GemmArgs& g, const Stream& stream) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    // Empty inner dimension: C = beta·C (cuBLASLt rejects k = 0); Gemm scales other betas.
    MF_CHECK(g.beta == 0.0f || g.beta == 1.0f) << "GEMM: k = 0 with beta " << g.beta;
    if (g.beta == 0.0f) {
      const size_t elem = DTypeSize(g.c_dtype);
      MF_CUDA_CHECK(cudaMemset2DAsync(g.c, g.ldc * elem, 0, g.n * elem, g.m,
                                      static_cast<cudaStream_t>(stream.native())));
    }
    return;
  }
  const uint32_t align_a = Alignment(g.a), align_b = Alignment(g.b), align_c = Alignment(g.c);
  const uint32_t align_bias = g.bias ? Alignment(g.bias) : 0;
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mutex);
  Handles& h = HandlesLocked(r, stream);
  const Registry::Key key{g.m,
                          g.n,
                          g.k,
                          g.trans_a,
                          g.trans_b,
                          g.lda,
                          g.ldb,
                          g.ldc,
                          static_cast<int>(g.ab_dtype),
                          static_cast<int>(g.c_dtype),
                          g.bias != nullptr,
                          align_a,
                          align_b,
                          align_c,
                          align_bias,
                          stream.device().index};
  auto it = r.plans.find(key);
  if (it == r.plans.end()) {
    it = r.plans.emplace(key, MakePlan(h.lt, g, align_a, align_b, align_c, align_bias)).first;
  }
  Registry::Plan& plan = it->second;
  if (g.bias != nullptr)
    SetAttr(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias));
  Tensor& workspace = h.workspaces[stream.native()];
  MF_CUBLAS_CHECK(cublasLtMatmul(h.lt, plan.op, &g.alpha, g.b, plan.a, g.a, plan.b, &g.beta, g.c,
                                 plan.c, g.c, plan.c, &plan.algo, workspace.raw_data(),
                                 kWorkspaceBytes, static_cast<cudaStream_t>(stream.native())));
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
  CheckOn(bias, x.device(), kOp, "bias");
  CheckDType(bias, y->dtype(), kOp, "bias");
  CheckShape(bias, {w.dim(0)}, kOp, "bias");
  g.bias = bias.raw_data();
  MF_CHECK(g.k > 0) << kOp << ": empty inner dimension";
  LtMatmul(g, stream);
}

}  // namespace moefold::ops::cuda
