// The per-tensor FP8 GEMM through cuBLASLt (ops/fp8_gemm.h). Row-major c (M, N) = a (M, K) ·
// b (N, K)ᵀ is column-major cᵀ = b·aᵀ with both operands K-major: Lt's A is our b (transposed),
// Lt's B is our a (not transposed) — the "TN" layout Hopper's FP8 tensor cores require. The
// dequantisation scales go in as device pointers (Lt's A scale = b's, Lt's B scale = a's), so a
// delayed or current scale never travels to the host. Blockwise scales run our kernel
// (fp8_gemm.cu).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/gpu_error.h"
#include "ops/cuda/check.h"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

cudaDataType_t LtType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kFp8E4M3:
      return CUDA_R_8F_E4M3;
    case DType::kFp8E5M2:
      return CUDA_R_8F_E5M2;
    default:
      MF_CHECK(false) << "Fp8Gemm: unsupported dtype " << DTypeName(dtype);
  }
  return CUDA_R_32F;
}

// One cuBLASLt handle per device, created on first use and kept.
cublasLtHandle_t LtHandle(int device) {
  static std::mutex mutex;
  static std::map<int, cublasLtHandle_t>* handles = new std::map<int, cublasLtHandle_t>();
  std::lock_guard<std::mutex> lock(mutex);
  cublasLtHandle_t& h = (*handles)[device];
  if (h == nullptr) MF_CUBLAS_CHECK(cublasLtCreate(&h));
  return h;
}

template <typename T>
void SetDesc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  MF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

}  // namespace

absl::Status Fp8Gemm(const Tensor& a, const Tensor& a_scale_inv, const Tensor& b,
                     const Tensor& b_scale_inv, const Fp8GemmOptions& options, float beta,
                     Tensor* c, Stream& stream) {
  const Device dev = a.device();
  CheckStream(stream, dev, "Fp8Gemm");
  const int64_t m = a.dim(0), n = b.dim(0), k = a.dim(1);
  if (m == 0 || n == 0) return absl::OkStatus();
  if (k == 0) {
    if (beta == 0.0f) c->SetZero(stream);
    return absl::OkStatus();
  }
  if (options.block_k > 0) {
    Fp8GemmBlockwise(a, a_scale_inv, b, b_scale_inv, options.block_k, beta, c, stream);
    return absl::OkStatus();
  }
  // Per-row scales (the FP8 token dispatch's rows from several senders): cuBLASLt on sm_90 takes
  // one scale per operand, so they run our kernel as one K block of all of K.
  if (a_scale_inv.numel() > 1 || b_scale_inv.numel() > 1) {
    if (k % 32 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Fp8Gemm: per-row scales need K = ", k, " to be a multiple of 32 on the GPU"));
    }
    Fp8GemmBlockwise(a, a_scale_inv, b, b_scale_inv, k, beta, c, stream);
    return absl::OkStatus();
  }
  if (a.dtype() == DType::kFp8E5M2 && b.dtype() == DType::kFp8E5M2) {
    return absl::InvalidArgumentError(
        "Fp8Gemm: cuBLASLt has no E5M2 × E5M2 matmul (one operand must be E4M3)");
  }
  // Hopper's FP8 kernels need 16-byte aligned K-major rows.
  if (k % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Fp8Gemm: K = ", k, " must be a multiple of 16 on the GPU (FP8 TN rows)"));
  }
  cublasLtMatmulDesc_t desc = nullptr;
  MF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
  SetDesc(desc, CUBLASLT_MATMUL_DESC_TRANSA, trans);
  SetDesc(desc, CUBLASLT_MATMUL_DESC_TRANSB, no_trans);
  const void* lt_a_scale = b_scale_inv.raw_data();
  const void* lt_b_scale = a_scale_inv.raw_data();
  SetDesc(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, lt_a_scale);
  SetDesc(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, lt_b_scale);
  const int8_t fast = options.fast_accumulation ? 1 : 0;
  SetDesc(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, fast);

  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  MF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, LtType(b.dtype()), k, n, k));  // bᵀ: K × N
  MF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, LtType(a.dtype()), k, m, k));  // aᵀ: K × M
  MF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, LtType(c->dtype()), n, m, n));  // cᵀ: N × M

  const cublasLtHandle_t lt = LtHandle(dev.index);
  Tensor workspace = Tensor::Empty({static_cast<int64_t>(kWorkspaceBytes)}, DType::kU8, dev);
  cublasLtMatmulPreference_t pref = nullptr;
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  MF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t heuristic =
      cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &result, &found);
  absl::Status status;
  if (heuristic != CUBLAS_STATUS_SUCCESS || found == 0) {
    status = absl::UnimplementedError(absl::StrCat(
        "Fp8Gemm: cuBLASLt has no FP8 algorithm for m=", m, " n=", n, " k=", k, " ",
        DTypeName(a.dtype()), "×", DTypeName(b.dtype()), "→", DTypeName(c->dtype()),
        " (a GPU without FP8 tensor cores?)"));
  } else {
    const float alpha = 1.0f;
    MF_CUBLAS_CHECK(cublasLtMatmul(lt, desc, &alpha, b.raw_data(), la, a.raw_data(), lb, &beta,
                                   c->raw_data(), lc, c->raw_data(), lc, &result.algo,
                                   workspace.raw_data(), kWorkspaceBytes,
                                   static_cast<cudaStream_t>(stream.native())));
    workspace.RecordStream(stream);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
  return status;
}

}  // namespace moefold::ops::cuda
