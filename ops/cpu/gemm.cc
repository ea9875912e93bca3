// CPU GEMM through OpenBLAS cblas_sgemm (row-major), and the linear layer built on it.
// Invariant: every linear forward/backward goes through Gemm, so a faster backend swaps in one
// place.
#include "ops/gemm.h"

#include <cblas.h>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

using internal::CheckF32;
using internal::CheckRank;

}  // namespace

void Gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, float alpha, float beta,
          Tensor* c, Stream& stream) {
  MF_RETURN_IF_GPU(a, "Gemm", cuda::Gemm(a, trans_a, b, trans_b, alpha, beta, c, stream));
  MF_CHECK(c != nullptr) << "Gemm: output c is null";
  if (internal::AnyBf16({&a, &b, c})) {
    // As cuBLASLt: a and b of one dtype, c f32 or theirs; f32 accumulation.
    internal::Bf16Emulation emu("Gemm");
    emu.SameDType({&a, &b}, {"a", "b"});
    if (c->dtype() != DType::kF32) emu.SameDType({&a, c}, {"a", "c"});
    Gemm(emu.In(a), trans_a, emu.In(b), trans_b, alpha, beta, emu.Out(c), stream);
    emu.RoundBack();
    return;
  }
  CheckF32(a, "Gemm", "a");
  CheckF32(b, "Gemm", "b");
  CheckF32(*c, "Gemm", "c");
  CheckRank(a, 2, "Gemm", "a");
  CheckRank(b, 2, "Gemm", "b");
  CheckRank(*c, 2, "Gemm", "c");
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  MF_CHECK(k == kb && c->dim(0) == m && c->dim(1) == n)
      << "Gemm: op(a) " << (trans_a ? "ᵀ" : "") << a.DebugString() << " · op(b) "
      << (trans_b ? "ᵀ" : "") << b.DebugString() << " does not fit c " << c->DebugString();
  if (m == 0 || n == 0) return;
  float* out = c->data<float>();
  if (k == 0) {
    // Empty inner dimension: C = beta·C. Handled here because BLAS rejects a leading dimension of
    // 0.
    for (int64_t i = 0; i < m * n; ++i) out[i] = beta == 0.0f ? 0.0f : beta * out[i];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a.data<float>(), static_cast<int>(a.dim(1)),
              b.data<float>(), static_cast<int>(b.dim(1)), beta, out, static_cast<int>(n));
}

void LinearForward(const Tensor& x, const Tensor& w, Tensor* y, Stream& stream) {
  Gemm(x, /*trans_a=*/false, w, /*trans_b=*/true, 1.0f, 0.0f, y, stream);
}

void LinearBiasForward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor* y,
                       Stream& stream) {
  MF_RETURN_IF_GPU(x, "LinearBiasForward", cuda::LinearBiasForward(x, w, bias, y, stream));
  MF_CHECK(y != nullptr) << "LinearBiasForward: output y is null";
  if (internal::AnyBf16({&x, &w, &bias, y})) {
    internal::Bf16Emulation emu("LinearBiasForward");
    emu.SameDType({&x, &w}, {"x", "w"});
    emu.SameDType({&bias, y}, {"bias", "y"});
    LinearBiasForward(emu.In(x), emu.In(w), emu.In(bias), emu.Out(y), stream);
    emu.RoundBack();
    return;
  }
  LinearForward(x, w, y, stream);
  CheckF32(bias, "LinearBiasForward", "bias");
  internal::CheckShape(bias, {y->dim(1)}, "LinearBiasForward", "bias");
  float* out = y->data<float>();
  const float* b = bias.data<float>();
  for (int64_t t = 0; t < y->dim(0); ++t) {
    for (int64_t j = 0; j < y->dim(1); ++j) out[t * y->dim(1) + j] += b[j];
  }
}

void LinearBackward(const Tensor& x, const Tensor& w, const Tensor& d_y, Tensor* d_x, Tensor* d_w,
                    Stream& stream) {
  if (d_x != nullptr) Gemm(d_y, false, w, false, 1.0f, 0.0f, d_x, stream);  // d_x = d_y · W
  if (d_w != nullptr) Gemm(d_y, true, x, false, 1.0f, 1.0f, d_w, stream);   // d_w += d_yᵀ · x
}

}  // namespace moefold::ops
