// CPU reference of the context-parallel helpers of the attention family: the online-softmax merge
// of two block partials (f64 weights, one rounding per output; an empty side, lse = −inf, is never
// read) and the leading-dimension swap that moves a local sequence into chunk-major layout.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/attention.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

bool F32OrBf16(DType dtype) { return dtype == DType::kF32 || dtype == DType::kBF16; }

void CheckFloat(const Tensor& t, const char* op, const char* name) {
  internal::CheckCpu(t, op, name);
  MF_CHECK(F32OrBf16(t.dtype())) << op << ": " << name << " must be f32 or bf16, got "
                                 << t.DebugString();
}

// Row `row` (n elements) of a (rows, n) tensor of f32 or bf16, widened to f32.
void ReadRow(const Tensor& t, int64_t row, int64_t n, float* dst) {
  ConvertToF32(static_cast<const char*>(t.raw_data()) + row * n * DTypeSize(t.dtype()), t.dtype(),
               dst, static_cast<size_t>(n));
}

}  // namespace

void AttentionMerge(const Tensor& out_a, const Tensor& lse_a, const Tensor& out_b,
                    const Tensor& lse_b, Tensor* out, Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "AttentionMerge";
  MF_RETURN_IF_GPU(out_a, kOp, cuda::AttentionMerge(out_a, lse_a, out_b, lse_b, out, lse, stream));
  CheckFloat(out_a, kOp, "out_a");
  CheckFloat(out_b, kOp, "out_b");
  internal::CheckRank(out_a, 4, kOp, "out_a");
  internal::CheckShape(out_b, out_a.shape(), kOp, "out_b");
  const int64_t batch = out_a.dim(0), seq = out_a.dim(1), heads = out_a.dim(2), dim = out_a.dim(3);
  internal::CheckF32(lse_a, kOp, "lse_a");
  internal::CheckShape(lse_a, {batch, heads, seq}, kOp, "lse_a");
  internal::CheckF32(lse_b, kOp, "lse_b");
  internal::CheckShape(lse_b, lse_a.shape(), kOp, "lse_b");
  internal::CheckF32Out(out, out_a.shape(), kOp, "out");
  internal::CheckF32Out(lse, lse_a.shape(), kOp, "lse");
  constexpr double kEmpty = -std::numeric_limits<double>::infinity();
  std::vector<float> a(dim), b(dim);
  for (int64_t bi = 0; bi < batch; ++bi) {
    for (int64_t i = 0; i < seq; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t stat = (bi * heads + h) * seq + i, row = (bi * seq + i) * heads + h;
        const double la = lse_a.data<float>()[stat], lb = lse_b.data<float>()[stat];
        const double hi = std::max(la, lb), lo = std::min(la, lb);
        // log(e^la + e^lb) = hi + log1p(e^(lo − hi)): exactly hi when one side is empty.
        const double merged = hi == kEmpty ? kEmpty : hi + std::log1p(std::exp(lo - hi));
        // An empty side is skipped, never multiplied: its out may hold NaN.
        const bool use_a = la != kEmpty, use_b = lb != kEmpty;
        const double wa = use_a ? std::exp(la - merged) : 0.0;
        const double wb = use_b ? std::exp(lb - merged) : 0.0;
        if (use_a) ReadRow(out_a, row, dim, a.data());
        if (use_b) ReadRow(out_b, row, dim, b.data());
        // Written after both reads: out may alias out_a or out_b.
        float* o = out->data<float>() + row * dim;
        for (int64_t c = 0; c < dim; ++c) {
          o[c] = static_cast<float>((use_a ? wa * a[c] : 0.0) + (use_b ? wb * b[c] : 0.0));
        }
        lse->data<float>()[stat] = static_cast<float>(merged);
      }
    }
  }
}

void SwapLeadingDims(const Tensor& x, Tensor* out, Stream& stream) {
  constexpr const char* kOp = "SwapLeadingDims";
  MF_RETURN_IF_GPU(x, kOp, cuda::SwapLeadingDims(x, out, stream));
  MF_CHECK(out != nullptr) << kOp << ": output out is null";
  CheckFloat(x, kOp, "x");
  CheckFloat(*out, kOp, "out");
  internal::CheckRank(x, 3, kOp, "x");
  const int64_t a = x.dim(0), n = x.dim(1), r = x.dim(2);
  internal::CheckShape(*out, {n, a, r}, kOp, "out");
  MF_CHECK(x.raw_data() != out->raw_data() || x.numel() == 0) << kOp << ": out aliases x";
  const size_t in_size = DTypeSize(x.dtype()), out_size = DTypeSize(out->dtype());
  std::vector<float> row(r);
  for (int64_t ai = 0; ai < a; ++ai) {
    for (int64_t ni = 0; ni < n; ++ni) {
      const char* src = static_cast<const char*>(x.raw_data()) + (ai * n + ni) * r * in_size;
      char* dst = static_cast<char*>(out->raw_data()) + (ni * a + ai) * r * out_size;
      if (x.dtype() == out->dtype()) {
        std::memcpy(dst, src, r * in_size);
      } else {
        ConvertToF32(src, x.dtype(), row.data(), static_cast<size_t>(r));
        ConvertFromF32(row.data(), dst, out->dtype(), static_cast<size_t>(r));
      }
    }
  }
}

}  // namespace moefold::ops
