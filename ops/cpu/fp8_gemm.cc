// CPU reference of the FP8 GEMM: the codes' exact values (f32 copies of the FP8 operands), one
// sgemm per K block, each block's partial product multiplied by its two scales' product and added
// in f32; then the beta term and one rounding to c's dtype. The GPU sums the same products in
// another order (and, with fast accumulation, with fewer promotions), so the two agree within the
// accumulation tolerance, not bit for bit.
#include "ops/fp8_gemm.h"

#include <cblas.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

bool IsFp8(DType d) { return d == DType::kFp8E4M3 || d == DType::kFp8E5M2; }

// Rows of an operand per scale row, or InvalidArgument.
absl::StatusOr<int64_t> ScaleRows(const Tensor& x, const Tensor& s, int64_t blocks,
                                  const char* name) {
  const int64_t srows = s.rank() == 1 ? (s.numel() == 1 ? 1 : -1) : s.dim(0);
  const int64_t scols = s.rank() == 1 ? 1 : s.dim(1);
  if (srows <= 0 || s.rank() > 2 || s.dtype() != DType::kF32 || x.dim(0) % srows != 0 ||
      scols != blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Fp8Gemm: ", name, "_scale_inv ", s.DebugString(), " does not fit ", name, " ",
        x.DebugString(), " with ", blocks, " K block(s) (want (rows dividing ", x.dim(0), ", ",
        blocks, ") f32)"));
  }
  return x.dim(0) / srows;
}

// The exact f32 values of FP8 codes, through the format's 256-entry table.
Tensor CodeValues(const Tensor& q) {
  float table[256];
  for (int c = 0; c < 256; ++c) {
    const auto code = static_cast<uint8_t>(c);
    table[c] = q.dtype() == DType::kFp8E4M3 ? Fp8E4M3ToFloat(code) : Fp8E5M2ToFloat(code);
  }
  Tensor out = Tensor::Empty(q.shape(), DType::kF32);
  const auto* src = static_cast<const uint8_t*>(q.raw_data());
  float* dst = out.data<float>();
  for (int64_t i = 0; i < q.numel(); ++i) dst[i] = table[src[i]];
  return out;
}

}  // namespace

namespace internal {

absl::Status CheckFp8Gemm(const Tensor& a, const Tensor& a_scale_inv, const Tensor& b,
                          const Tensor& b_scale_inv, const Fp8GemmOptions& options, float beta,
                          const Tensor* c) {
  if (c == nullptr) return absl::InvalidArgumentError("Fp8Gemm: output c is null");
  if (a.rank() != 2 || b.rank() != 2 || c->rank() != 2 || !IsFp8(a.dtype()) ||
      !IsFp8(b.dtype()) || (c->dtype() != DType::kF32 && c->dtype() != DType::kBF16)) {
    return absl::InvalidArgumentError(absl::StrCat("Fp8Gemm: a ", a.DebugString(), " and b ",
                                                   b.DebugString(), " must be rank-2 FP8, c ",
                                                   c->DebugString(), " rank-2 f32 or bf16"));
  }
  if (a.dim(1) != b.dim(1) || c->dim(0) != a.dim(0) || c->dim(1) != b.dim(0)) {
    return absl::InvalidArgumentError(absl::StrCat("Fp8Gemm: a ", a.DebugString(), " · b ",
                                                   b.DebugString(), "ᵀ does not fit c ",
                                                   c->DebugString()));
  }
  if (beta != 0.0f && beta != 1.0f) {
    return absl::InvalidArgumentError(absl::StrCat("Fp8Gemm: beta ", beta, " is not 0 or 1"));
  }
  const int64_t k = a.dim(1);
  if (options.block_k < 0 || (options.block_k > 0 && k % options.block_k != 0)) {
    return absl::InvalidArgumentError(absl::StrCat("Fp8Gemm: K = ", k,
                                                   " is not a multiple of the block size ",
                                                   options.block_k));
  }
  const int64_t blocks = options.block_k == 0 ? 1 : k / options.block_k;
  if (k > 0) {
    MF_RETURN_IF_ERROR(ScaleRows(a, a_scale_inv, blocks, "a").status());
    MF_RETURN_IF_ERROR(ScaleRows(b, b_scale_inv, blocks, "b").status());
  }
  const Device dev = a.device();
  if (b.device() != dev || c->device() != dev || a_scale_inv.device() != dev ||
      b_scale_inv.device() != dev) {
    return absl::InvalidArgumentError("Fp8Gemm: operands on different devices");
  }
  return absl::OkStatus();
}

}  // namespace internal

absl::Status Fp8Gemm(const Tensor& a, const Tensor& a_scale_inv, const Tensor& b,
                     const Tensor& b_scale_inv, const Fp8GemmOptions& options, float beta,
                     Tensor* c, Stream& stream) {
  MF_RETURN_IF_ERROR(internal::CheckFp8Gemm(a, a_scale_inv, b, b_scale_inv, options, beta, c));
  MF_RETURN_IF_GPU(a, "Fp8Gemm",
                   cuda::Fp8Gemm(a, a_scale_inv, b, b_scale_inv, options, beta, c, stream));
  const int64_t m = a.dim(0), n = b.dim(0), k = a.dim(1);
  if (m == 0 || n == 0) return absl::OkStatus();
  std::vector<float> acc(static_cast<size_t>(m * n), 0.0f);
  if (k > 0) {
    const int64_t block = options.block_k == 0 ? k : options.block_k, blocks = k / block;
    const Tensor af = CodeValues(a), bf = CodeValues(b);
    const Tensor sa = a_scale_inv.Reshape({a_scale_inv.numel() / blocks, blocks});
    const Tensor sb = b_scale_inv.Reshape({b_scale_inv.numel() / blocks, blocks});
    const int64_t ra = m / sa.dim(0), rb = n / sb.dim(0);
    const float* pa = sa.data<float>();
    const float* pb = sb.data<float>();
    std::vector<float> partial(static_cast<size_t>(m * n));
    for (int64_t kb = 0; kb < blocks; ++kb) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                  static_cast<int>(n), static_cast<int>(block), 1.0f,
                  af.data<float>() + kb * block, static_cast<int>(k),
                  bf.data<float>() + kb * block, static_cast<int>(k), 0.0f, partial.data(),
                  static_cast<int>(n));
      for (int64_t i = 0; i < m; ++i) {
        const float s_a = pa[(i / ra) * blocks + kb];
        for (int64_t j = 0; j < n; ++j) {
          const float s = s_a * pb[(j / rb) * blocks + kb];
          acc[i * n + j] += partial[i * n + j] * s;
        }
      }
    }
  }
  if (c->dtype() == DType::kF32) {
    float* out = c->data<float>();
    for (int64_t i = 0; i < m * n; ++i) out[i] = beta == 0.0f ? acc[i] : acc[i] + out[i];
    return absl::OkStatus();
  }
  // bf16 output: the f32 result (plus the old value widened) rounded once.
  Tensor result = Tensor::FromVector(acc, {m, n});
  if (beta != 0.0f) {
    const Tensor old = c->To(DType::kF32);
    float* r = result.data<float>();
    const float* o = old.data<float>();
    for (int64_t i = 0; i < m * n; ++i) r[i] += o[i];
  }
  c->ConvertFrom(result, stream);
  return absl::OkStatus();
}

void TransposePad(const Tensor& x, Tensor* y, Stream& stream) {
  MF_CHECK(y != nullptr) << "TransposePad: output y is null";
  MF_CHECK(x.rank() == 2 && y->rank() == 2 && x.dtype() == y->dtype() && y->dim(0) == x.dim(1) &&
           y->dim(1) >= x.dim(0))
      << "TransposePad: x " << x.DebugString() << " does not fit y " << y->DebugString();
  const size_t size = DTypeSize(x.dtype());
  MF_CHECK(size == 1 || size == 2 || size == 4) << "TransposePad: " << x.DebugString();
  MF_RETURN_IF_GPU(x, "TransposePad", cuda::TransposePad(x, y, stream));
  internal::CheckCpu(x, "TransposePad", "x");
  internal::CheckCpu(*y, "TransposePad", "y");
  const int64_t m = x.dim(0), n = x.dim(1), mp = y->dim(1);
  const auto* src = static_cast<const uint8_t*>(x.raw_data());
  auto* dst = static_cast<uint8_t*>(y->raw_data());
  std::memset(dst, 0, static_cast<size_t>(n * mp) * size);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      std::memcpy(dst + (j * mp + i) * size, src + (i * n + j) * size, size);
    }
  }
}

}  // namespace moefold::ops
