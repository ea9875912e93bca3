// The experts' GEMMs on the GPU: either one cuBLASLt matmul per expert with rows, or all experts in
// one cublasGemmGroupedBatchedEx call (one group per expert, pointer arrays uploaded per call).
// Expert counts are read on the host: the row offsets decide the pointers.
#include "ops/grouped_gemm.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <vector>

#include "core/gpu_error.h"
#include "ops/cuda/blas.h"
#include "ops/cuda/check.h"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

std::vector<int32_t> HostCounts(const Tensor& counts, int64_t experts, int64_t rows,
                                const char* op) {
  MF_CHECK(counts.dtype() == DType::kI32 && counts.rank() == 1 && counts.numel() == experts)
      << op << ": counts must be (E=" << experts << ") i32, got " << counts.DebugString();
  const Tensor host = counts.device().is_cpu() ? counts : counts.To(Device::Cpu());
  std::vector<int32_t> n(host.data<int32_t>(), host.data<int32_t>() + experts);
  int64_t total = 0;
  for (int64_t e = 0; e < experts; ++e) {
    MF_CHECK_GE(n[e], 0) << op << ": expert " << e << " has a negative count";
    total += n[e];
  }
  MF_CHECK_EQ(total, rows) << op << ": expert counts must cover every row";
  return n;
}

cudaDataType_t CudaType(DType dtype) { return dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F; }

// Runs the problems (one per expert) in one grouped cuBLAS call; they share dtypes and betas.
void GroupedCall(const std::vector<GemmArgs>& problems, const Stream& stream) {
  const int groups = static_cast<int>(problems.size());
  if (groups == 0) return;
  std::vector<cublasOperation_t> trans_a(groups), trans_b(groups);
  std::vector<int> m(groups), n(groups), k(groups), lda(groups), ldb(groups), ldc(groups),
      size(groups, 1);
  std::vector<float> alpha(groups), beta(groups);
  std::vector<const void*> pointers(3 * groups);
  for (int i = 0; i < groups; ++i) {
    const GemmArgs& g = problems[i];
    MF_CHECK(g.k > 0 && g.m <= INT32_MAX && g.n <= INT32_MAX && g.k <= INT32_MAX)
        << "grouped GEMM: problem sizes must be positive and fit in int";
    // Column-major: Cᵀ (n×m) = op(B)ᵀ (n×k) · op(A)ᵀ (k×m).
    trans_a[i] = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    trans_b[i] = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    m[i] = static_cast<int>(g.n);
    n[i] = static_cast<int>(g.m);
    k[i] = static_cast<int>(g.k);
    lda[i] = static_cast<int>(g.ldb);
    ldb[i] = static_cast<int>(g.lda);
    ldc[i] = static_cast<int>(g.ldc);
    alpha[i] = g.alpha;
    beta[i] = g.beta;
    pointers[i] = g.b;
    pointers[groups + i] = g.a;
    pointers[2 * groups + i] = g.c;
  }
  // The pointer arrays live in device memory (a pageable source is staged before the call returns).
  Tensor device_pointers = Scratch({3 * groups}, DType::kI64, stream);
  const cudaStream_t s = static_cast<cudaStream_t>(stream.native());
  MF_CUDA_CHECK(cudaMemcpyAsync(device_pointers.raw_data(), pointers.data(),
                                pointers.size() * sizeof(void*), cudaMemcpyHostToDevice, s));
  auto* table = static_cast<void**>(device_pointers.raw_data());
  const cudaDataType_t ab = CudaType(problems[0].ab_dtype), c = CudaType(problems[0].c_dtype);
  auto handle = static_cast<cublasHandle_t>(BlasHandleFor(stream));
  MF_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
      handle, trans_a.data(), trans_b.data(), m.data(), n.data(), k.data(), alpha.data(),
      const_cast<const void* const*>(table), ab, lda.data(),
      const_cast<const void* const*>(table + groups), ab, ldb.data(), beta.data(),
      table + 2 * groups, c, ldc.data(), groups, size.data(), CUBLAS_COMPUTE_32F));
}

void Run(const std::vector<GemmArgs>& problems, const Stream& stream) {
  if (problems.empty()) return;
  const bool grouped = GetGroupedGemmBackend() == GroupedGemmBackend::kCublasGrouped &&
                       problems[0].ab_dtype == problems[0].c_dtype;
  if (grouped) return GroupedCall(problems, stream);
  for (const GemmArgs& g : problems) LtMatmul(g, stream);
}

struct Dims {
  int64_t experts, out, in, rows;
};

Dims CheckGrouped(const Tensor& x, const Tensor& w, const Stream& stream, const char* op) {
  const Device dev = x.device();
  CheckStream(stream, dev, op);
  CheckActivation(x, dev, op, "x");
  CheckRank(x, 2, op, "x");
  CheckOn(w, dev, op, "w");
  CheckDType(w, x.dtype(), op, "w");
  CheckRank(w, 3, op, "w");
  MF_CHECK_EQ(x.dim(1), w.dim(2)) << op << ": " << x.DebugString() << " vs " << w.DebugString();
  return Dims{w.dim(0), w.dim(1), w.dim(2), x.dim(0)};
}

const char* Row(const Tensor& t, int64_t row) {
  return static_cast<const char*>(t.raw_data()) + row * t.dim(1) * DTypeSize(t.dtype());
}
const char* Expert(const Tensor& w, int64_t e) {
  return static_cast<const char*>(w.raw_data()) + e * w.dim(1) * w.dim(2) * DTypeSize(w.dtype());
}

}  // namespace

void GroupedLinearForward(const Tensor& x, const Tensor& w, const Tensor& counts, Tensor* y,
                          Stream& stream) {
  constexpr const char* kOp = "GroupedLinearForward";
  const Dims d = CheckGrouped(x, w, stream, kOp);
  CheckOut(y, x.device(), x.dtype(), {d.rows, d.out}, kOp, "y");
  const std::vector<int32_t> n = HostCounts(counts, d.experts, d.rows, kOp);
  std::vector<GemmArgs> problems;
  int64_t row = 0;
  for (int64_t e = 0; e < d.experts; ++e) {
    if (n[e] == 0) continue;
    GemmArgs g;  // y_e = x_e · W_eᵀ
    g.m = n[e];
    g.n = d.out;
    g.k = d.in;
    g.trans_b = true;
    g.a = Row(x, row);
    g.lda = d.in;
    g.b = Expert(w, e);
    g.ldb = d.in;
    g.c = const_cast<char*>(Row(*y, row));
    g.ldc = d.out;
    g.ab_dtype = g.c_dtype = x.dtype();
    problems.push_back(g);
    row += n[e];
  }
  Run(problems, stream);
}

void GroupedLinearBackward(const Tensor& x, const Tensor& w, const Tensor& counts,
                           const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream) {
  constexpr const char* kOp = "GroupedLinearBackward";
  const Dims d = CheckGrouped(x, w, stream, kOp);
  CheckOn(d_y, x.device(), kOp, "d_y");
  CheckDType(d_y, x.dtype(), kOp, "d_y");
  CheckShape(d_y, {d.rows, d.out}, kOp, "d_y");
  if (d_x != nullptr) CheckOut(d_x, x.device(), x.dtype(), x.shape(), kOp, "d_x");
  if (d_w != nullptr) {
    MF_CHECK(d_w->dtype() == DType::kF32 || d_w->dtype() == x.dtype())
        << kOp << ": d_w must be f32 or " << DTypeName(x.dtype()) << ", got " << d_w->DebugString();
    CheckOut(d_w, x.device(), d_w->dtype(), w.shape(), kOp, "d_w");
  }
  const std::vector<int32_t> n = HostCounts(counts, d.experts, d.rows, kOp);
  std::vector<GemmArgs> dx_problems, dw_problems;
  int64_t row = 0;
  for (int64_t e = 0; e < d.experts; ++e) {
    if (n[e] == 0) continue;
    if (d_x != nullptr) {
      GemmArgs g;  // d_x_e = d_y_e · W_e
      g.m = n[e];
      g.n = d.in;
      g.k = d.out;
      g.a = Row(d_y, row);
      g.lda = d.out;
      g.b = Expert(w, e);
      g.ldb = d.in;
      g.c = const_cast<char*>(Row(*d_x, row));
      g.ldc = d.in;
      g.ab_dtype = g.c_dtype = x.dtype();
      dx_problems.push_back(g);
    }
    if (d_w != nullptr) {
      GemmArgs g;  // d_w_e += d_y_eᵀ · x_e
      g.m = d.out;
      g.n = d.in;
      g.k = n[e];
      g.trans_a = true;
      g.a = Row(d_y, row);
      g.lda = d.out;
      g.b = Row(x, row);
      g.ldb = d.in;
      g.c = const_cast<char*>(Expert(*d_w, e));
      g.ldc = d.in;
      g.ab_dtype = x.dtype();
      g.c_dtype = d_w->dtype();
      g.beta = 1.0f;
      dw_problems.push_back(g);
    }
    row += n[e];
  }
  Run(dx_problems, stream);
  Run(dw_problems, stream);
}

}  // namespace moefold::ops::cuda
