// The experts' GEMMs on the GPU, one launch per projection where the libraries allow it: equal
// counts run as one strided-batched cuBLASLt matmul, unequal ones as one
// cublasGemmGroupedBatchedEx call (one group per expert with rows) or as one cuBLASLt matmul per
// expert. Expert counts are read on the host: the row offsets decide the pointers.
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

// Every expert has the same, non-zero number of rows (forced-balanced routing, padded capacity).
bool EqualCounts(const std::vector<int32_t>& n) {
  if (n.empty() || n[0] == 0) return false;
  for (int32_t c : n) {
    if (c != n[0]) return false;
  }
  return true;
}

cudaDataType_t CudaType(DType dtype) { return dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F; }

// cublasGemmGroupedBatchedEx takes these problems: its type table has no mixed output (bf16
// inputs with an f32 C, how weight gradients accumulate, is not among its combinations), sizes are
// int, and we ask for the 16-byte alignment of every matrix and row that its tensor-core kernels
// assume rather than find out on the GPU.
bool GroupedCallTakes(const std::vector<GemmArgs>& problems) {
  for (const GemmArgs& g : problems) {
    const size_t ab = DTypeSize(g.ab_dtype), c = DTypeSize(g.c_dtype);
    if (g.c_dtype != g.ab_dtype) return false;
    if (g.m > INT32_MAX || g.n > INT32_MAX || g.k > INT32_MAX) return false;
    if (g.lda > INT32_MAX || g.ldb > INT32_MAX || g.ldc > INT32_MAX) return false;
    if (!IsAligned(g.a, 16) || !IsAligned(g.b, 16) || !IsAligned(g.c, 16)) return false;
    if ((g.lda * ab) % 16 != 0 || (g.ldb * ab) % 16 != 0 || (g.ldc * c) % 16 != 0) return false;
  }
  return true;
}

// Whether the experts' GEMMs, one after the other, keep the GPU busy: the average problem has at
// least half a wave of 128×128 output tiles (one per two SMs). cuBLAS's grouped-batched kernels
// are built on warp-level MMA rather than the warpgroup MMA of the dense Hopper kernels, so they
// pay off where the loop would leave SMs idle (many small experts), not where each expert is a
// full-size GEMM. The line falls between the benchmark models on an H100 (132 SMs): mixtral_mini's
// experts have ≥ 128 tiles, finegrained_mini's ≤ 64; op_bench times every backend to move it.
bool LoopFillsGpu(const std::vector<GemmArgs>& problems, const Stream& stream) {
  if (problems.empty()) return true;
  int sms = 0;
  MF_CUDA_CHECK(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, stream.device().index));
  double tiles = 0;
  for (const GemmArgs& g : problems) tiles += double((g.m + 127) / 128) * double((g.n + 127) / 128);
  return 2.0 * tiles / static_cast<double>(problems.size()) >= sms;
}

// All problems in one cublasGemmGroupedBatchedEx call, one group per problem (they share dtypes).
// The device pointer arrays are written into pinned memory and copied on the stream: no host wait.
void GroupedCall(const std::vector<GemmArgs>& problems, const Stream& stream) {
  const int groups = static_cast<int>(problems.size());
  if (groups == 0) return;
  std::vector<cublasOperation_t> trans_a(groups), trans_b(groups);
  std::vector<int> m(groups), n(groups), k(groups), lda(groups), ldb(groups), ldc(groups),
      size(groups, 1);
  std::vector<float> alpha(groups), beta(groups);
  Tensor staging = Tensor::EmptyPinned({3 * static_cast<int64_t>(groups)}, DType::kI64);
  int64_t* pointers = staging.data<int64_t>();
  for (int i = 0; i < groups; ++i) {
    const GemmArgs& g = problems[i];
    MF_CHECK(g.m > 0 && g.n > 0 && g.k > 0 && g.batch == 1)
        << "grouped GEMM: problem " << i << " is empty or batched";
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
    pointers[i] = reinterpret_cast<intptr_t>(g.b);
    pointers[groups + i] = reinterpret_cast<intptr_t>(g.a);
    pointers[2 * groups + i] = reinterpret_cast<intptr_t>(g.c);
  }
  Tensor table = Scratch(staging.shape(), DType::kI64, stream);
  table.CopyFromAsync(staging, stream);
  staging.RecordStream(stream);  // the pinned block returns to the pool once the copy has run
  auto* device_pointers = static_cast<void**>(table.raw_data());
  const cudaDataType_t ab = CudaType(problems[0].ab_dtype), c = CudaType(problems[0].c_dtype);
  WithBlasHandle(stream, [&](void* handle) {
    MF_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(
        static_cast<cublasHandle_t>(handle), trans_a.data(), trans_b.data(), m.data(), n.data(),
        k.data(), alpha.data(), const_cast<const void* const*>(device_pointers), ab, lda.data(),
        const_cast<const void* const*>(device_pointers + groups), ab, ldb.data(), beta.data(),
        device_pointers + 2 * groups, c, ldc.data(), groups, size.data(), CUBLAS_COMPUTE_32F));
  });
}

// The per-expert problems of equal counts as one strided-batched problem: the experts' matrices
// are equally spaced, so expert e's pointers are the first expert's plus e strides.
GemmArgs Batched(const std::vector<GemmArgs>& problems) {
  GemmArgs g = problems[0];
  g.batch = static_cast<int64_t>(problems.size());
  if (g.batch == 1) return g;
  const GemmArgs& next = problems[1];
  auto stride = [](const void* first, const void* second, DType dtype) {
    const auto bytes = static_cast<const char*>(second) - static_cast<const char*>(first);
    return static_cast<int64_t>(bytes) / static_cast<int64_t>(DTypeSize(dtype));
  };
  g.stride_a = stride(g.a, next.a, g.ab_dtype);
  g.stride_b = stride(g.b, next.b, g.ab_dtype);
  g.stride_c = stride(g.c, next.c, g.c_dtype);
  return g;
}

enum class Launch { kLoop, kGrouped, kBatched };

// The launch for one projection's problems under `backend` (grouped_gemm.h): every backend falls
// back to the loop where its call does not apply.
Launch Choose(GroupedGemmBackend backend, bool equal_counts, const std::vector<GemmArgs>& problems,
              const Stream& stream) {
  switch (backend) {
    case GroupedGemmBackend::kLoop:
      return Launch::kLoop;
    case GroupedGemmBackend::kBatched:
      return equal_counts ? Launch::kBatched : Launch::kLoop;
    case GroupedGemmBackend::kCublasGrouped:
      return GroupedCallTakes(problems) ? Launch::kGrouped : Launch::kLoop;
    case GroupedGemmBackend::kAuto:
      if (equal_counts) return Launch::kBatched;
      if (GroupedCallTakes(problems) && !LoopFillsGpu(problems, stream)) return Launch::kGrouped;
      return Launch::kLoop;
  }
  return Launch::kLoop;
}

// Runs one projection's per-expert problems (experts with rows only). Problems without outputs
// are dropped, and those with an empty inner dimension (k = 0: y = 0) go through LtMatmul alone:
// neither reaches the batched or the grouped call.
void Run(const std::vector<GemmArgs>& problems, bool equal_counts, const Stream& stream) {
  if (problems.empty()) return;
  std::vector<GemmArgs> nonempty;
  for (const GemmArgs& g : problems) {
    if (g.m == 0 || g.n == 0) continue;
    if (g.k == 0) {
      LtMatmul(g, stream);
    } else {
      nonempty.push_back(g);
    }
  }
  if (nonempty.empty()) return;
  equal_counts = equal_counts && nonempty.size() == problems.size();
  switch (Choose(GetGroupedGemmBackend(), equal_counts, nonempty, stream)) {
    case Launch::kBatched:
      return LtMatmul(Batched(nonempty), stream);
    case Launch::kGrouped:
      return GroupedCall(nonempty, stream);
    case Launch::kLoop:
      for (const GemmArgs& g : nonempty) LtMatmul(g, stream);
      return;
  }
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

char* Row(const Tensor& t, int64_t row) {
  return static_cast<char*>(t.raw_data()) + row * t.dim(1) * DTypeSize(t.dtype());
}
char* Expert(const Tensor& w, int64_t e) {
  return static_cast<char*>(w.raw_data()) + e * w.dim(1) * w.dim(2) * DTypeSize(w.dtype());
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
    g.c = Row(*y, row);
    g.ldc = d.out;
    g.ab_dtype = g.c_dtype = x.dtype();
    problems.push_back(g);
    row += n[e];
  }
  Run(problems, EqualCounts(n), stream);
}

void GroupedLinearBackward(const Tensor& x, const Tensor& w, const Tensor& counts,
                           const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream) {
  constexpr const char* kOp = "GroupedLinearBackward";
  const Dims d = CheckGrouped(x, w, stream, kOp);
  CheckIn(d_y, x.device(), x.dtype(), {d.rows, d.out}, kOp, "d_y");
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
    // An expert without rows has no d_x rows, and its weight gradient adds nothing.
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
      g.c = Row(*d_x, row);
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
      g.c = Expert(*d_w, e);
      g.ldc = d.in;
      g.ab_dtype = x.dtype();
      g.c_dtype = d_w->dtype();
      g.beta = 1.0f;
      dw_problems.push_back(g);
    }
    row += n[e];
  }
  const bool equal = EqualCounts(n);
  Run(dx_problems, equal, stream);
  Run(dw_problems, equal, stream);
}

}  // namespace moefold::ops::cuda
