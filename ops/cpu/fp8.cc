// CPU reference of the FP8 quantisation ops: plain loops over f32 copies of the inputs, each
// product x·scale rounded once (x86-64 without FMA contracts nothing; a NaN product is +NaN as on
// the GPU) and cast with core/dtype.h's saturating RNE conversions, the casts of CUDA's
// __nv_cvt_float_to_fp8. Amaxes are maxima of |x|'s bit patterns (NaN mapped to 0x7FC00000 above
// +Inf), which ops/cuda/fp8.cu reduces alike.
#include "ops/fp8.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "ops/cpu/check.h"
#include "ops/cpu/fp8_cast.h"

namespace moefold::ops {
namespace {

using internal::AbsBits;
using internal::CastFp8;
using internal::FromBits;
using internal::IsFp8;
using internal::Scaled;

float Fp8ToFloat(uint8_t code, DType dtype) {
  return dtype == DType::kFp8E4M3 ? Fp8E4M3ToFloat(code) : Fp8E5M2ToFloat(code);
}

void CheckActivation(const Tensor& t, const char* op, const char* name) {
  internal::CheckCpu(t, op, name);
  MF_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16)
      << op << ": " << name << " must be f32 or bf16, got " << t.DebugString();
}

void CheckFp8(const Tensor& t, const char* op, const char* name) {
  internal::CheckCpu(t, op, name);
  MF_CHECK(IsFp8(t.dtype())) << op << ": " << name << " must be fp8_e4m3 or fp8_e5m2, got "
                             << t.DebugString();
}

// The dimensions of an (M, N) tensor split into blocks, or InvalidArgument naming the one that
// does not divide.
absl::Status CheckBlocks(const Tensor& t, const Fp8BlockShape& block, const char* op) {
  MF_CHECK(block.rows > 0 && block.cols > 0) << op << ": block " << block.rows << "×" << block.cols;
  internal::CheckRank(t, 2, op, "the quantised tensor");
  if (t.dim(0) % block.rows != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": rows M = ", t.dim(0), " is not a multiple of the block's ", block.rows, " rows"));
  }
  if (t.dim(1) % block.cols != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": columns N = ", t.dim(1),
                                                   " is not a multiple of the block's ", block.cols,
                                                   " columns"));
  }
  return absl::OkStatus();
}

}  // namespace

float Fp8Max(DType fp8_dtype) {
  MF_CHECK(IsFp8(fp8_dtype)) << "Fp8Max: " << DTypeName(fp8_dtype) << " is not an FP8 dtype";
  return fp8_dtype == DType::kFp8E4M3 ? kFp8E4M3Max : kFp8E5M2Max;
}

float Fp8ScaleFromAmax(float amax, float fp8_max, bool pow2, float previous) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return previous;
  float scale = fp8_max / amax;
  if (!std::isfinite(scale)) scale = FLT_MAX;
  if (pow2) {
    uint32_t bits;
    std::memcpy(&bits, &scale, 4);
    scale = FromBits(bits & 0xff800000u);  // scale is a positive normal number here
  }
  return scale;
}

void CastTransposeAmax(const Tensor& x, const Tensor& scale, Tensor* y, Tensor* y_t, Tensor* amax,
                       Stream& stream) {
  constexpr const char* kOp = "CastTransposeAmax";
  MF_RETURN_IF_GPU(x, kOp, cuda::CastTransposeAmax(x, scale, y, y_t, amax, stream));
  CheckActivation(x, kOp, "x");
  internal::CheckRank(x, 2, kOp, "x");
  const int64_t m = x.dim(0), n = x.dim(1);
  internal::CheckF32(scale, kOp, "scale");
  internal::CheckShape(scale, {1}, kOp, "scale");
  if (y != nullptr) {
    CheckFp8(*y, kOp, "y");
    internal::CheckShape(*y, {m, n}, kOp, "y");
  }
  if (y_t != nullptr) {
    CheckFp8(*y_t, kOp, "y_t");
    internal::CheckShape(*y_t, {n, m}, kOp, "y_t");
    MF_CHECK(y == nullptr || y->dtype() == y_t->dtype())
        << kOp << ": y " << y->DebugString() << " and y_t " << y_t->DebugString();
  }
  if (amax != nullptr) internal::CheckF32Out(amax, {1}, kOp, "amax");
  const Tensor wide = x.To(DType::kF32, stream);  // x itself when f32
  const float* px = wide.data<float>();
  const float s = scale.data<float>()[0];
  const DType format = y != nullptr ? y->dtype() : y_t != nullptr ? y_t->dtype() : DType::kFp8E4M3;
  uint8_t* py = y != nullptr ? y->data<uint8_t>() : nullptr;
  uint8_t* pt = y_t != nullptr ? y_t->data<uint8_t>() : nullptr;
  uint32_t bits = 0;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float v = px[i * n + j];
      bits = std::max(bits, AbsBits(v));
      const uint8_t code = CastFp8(Scaled(v, s), format);
      if (py != nullptr) py[i * n + j] = code;
      if (pt != nullptr) pt[j * m + i] = code;
    }
  }
  if (amax != nullptr) {
    float* pa = amax->data<float>();
    pa[0] = FromBits(std::max(AbsBits(pa[0]), bits));
  }
}

absl::Status QuantizeBlockwise(const Tensor& x, const Fp8BlockShape& block,
                               const BlockwiseOptions& options, Tensor* q, Tensor* scale_inv,
                               Stream& stream) {
  constexpr const char* kOp = "QuantizeBlockwise";
  if (x.device().is_cuda()) {
    MF_RETURN_IF_ERROR(CheckBlocks(x, block, kOp));
  }
  MF_RETURN_IF_GPU(x, kOp, cuda::QuantizeBlockwise(x, block, options, q, scale_inv, stream));
  CheckActivation(x, kOp, "x");
  MF_RETURN_IF_ERROR(CheckBlocks(x, block, kOp));
  const int64_t m = x.dim(0), n = x.dim(1), bm = m / block.rows, bn = n / block.cols;
  MF_CHECK(q != nullptr && scale_inv != nullptr) << kOp << ": q or scale_inv is null";
  CheckFp8(*q, kOp, "q");
  internal::CheckShape(*q, {m, n}, kOp, "q");
  internal::CheckF32Out(scale_inv, {bm, bn}, kOp, "scale_inv");
  const Tensor wide = x.To(DType::kF32, stream);
  const float* px = wide.data<float>();
  const float fp8_max = Fp8Max(q->dtype());
  uint8_t* pq = q->data<uint8_t>();
  float* ps = scale_inv->data<float>();
  for (int64_t bi = 0; bi < bm; ++bi) {
    for (int64_t bj = 0; bj < bn; ++bj) {
      const int64_t r0 = bi * block.rows, c0 = bj * block.cols;
      uint32_t bits = 0;
      for (int64_t i = r0; i < r0 + block.rows; ++i) {
        for (int64_t j = c0; j < c0 + block.cols; ++j)
          bits = std::max(bits, AbsBits(px[i * n + j]));
      }
      const float s = Fp8ScaleFromAmax(FromBits(bits), fp8_max, options.pow2, 1.0f);
      ps[bi * bn + bj] = 1.0f / s;
      for (int64_t i = r0; i < r0 + block.rows; ++i) {
        for (int64_t j = c0; j < c0 + block.cols; ++j) {
          pq[i * n + j] = CastFp8(Scaled(px[i * n + j], s), q->dtype());
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DequantizeBlockwise(const Tensor& q, const Tensor& scale_inv,
                                 const Fp8BlockShape& block, Tensor* x, Stream& stream) {
  constexpr const char* kOp = "DequantizeBlockwise";
  if (q.device().is_cuda()) {
    MF_RETURN_IF_ERROR(CheckBlocks(q, block, kOp));
  }
  MF_RETURN_IF_GPU(q, kOp, cuda::DequantizeBlockwise(q, scale_inv, block, x, stream));
  CheckFp8(q, kOp, "q");
  MF_RETURN_IF_ERROR(CheckBlocks(q, block, kOp));
  const int64_t m = q.dim(0), n = q.dim(1), bn = n / block.cols;
  internal::CheckF32(scale_inv, kOp, "scale_inv");
  internal::CheckShape(scale_inv, {m / block.rows, bn}, kOp, "scale_inv");
  MF_CHECK(x != nullptr) << kOp << ": x is null";
  CheckActivation(*x, kOp, "x");
  internal::CheckShape(*x, {m, n}, kOp, "x");
  const uint8_t* pq = q.data<uint8_t>();
  const float* ps = scale_inv.data<float>();
  std::vector<float> out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      out[i * n + j] =
          Fp8ToFloat(pq[i * n + j], q.dtype()) * ps[(i / block.rows) * bn + j / block.cols];
    }
  }
  ConvertFromF32(out.data(), x->raw_data(), x->dtype(), out.size());
  return absl::OkStatus();
}

void Fp8UpdateScales(float fp8_max, Tensor* amax, Tensor* history, Tensor* scale, Tensor* scale_inv,
                     Stream& stream) {
  constexpr const char* kOp = "Fp8UpdateScales";
  MF_CHECK(amax != nullptr && scale != nullptr && scale_inv != nullptr)
      << kOp << ": amax, scale or scale_inv is null";
  MF_RETURN_IF_GPU(*amax, kOp,
                   cuda::Fp8UpdateScales(fp8_max, amax, history, scale, scale_inv, stream));
  MF_CHECK(fp8_max > 0 && std::isfinite(fp8_max)) << kOp << ": fp8_max " << fp8_max;
  internal::CheckF32(*amax, kOp, "amax");
  internal::CheckRank(*amax, 1, kOp, "amax");
  const int64_t t = amax->dim(0);
  internal::CheckF32Out(scale, {t}, kOp, "scale");
  internal::CheckF32Out(scale_inv, {t}, kOp, "scale_inv");
  int64_t length = 0;
  float* ph = nullptr;
  if (history != nullptr) {
    internal::CheckF32(*history, kOp, "history");
    internal::CheckRank(*history, 2, kOp, "history");
    length = history->dim(0);
    MF_CHECK_GE(length, 1) << kOp << ": an amax history needs at least one row";
    internal::CheckShape(*history, {length, t}, kOp, "history");
    ph = history->data<float>();
  }
  float* pa = amax->data<float>();
  float* ps = scale->data<float>();
  float* pi = scale_inv->data<float>();
  for (int64_t k = 0; k < t; ++k) {
    uint32_t bits = AbsBits(pa[k]);
    if (ph != nullptr) {
      for (int64_t l = length - 1; l > 0; --l) ph[l * t + k] = ph[(l - 1) * t + k];
      ph[k] = pa[k];
      pa[k] = 0.0f;
      for (int64_t l = 0; l < length; ++l) bits = std::max(bits, AbsBits(ph[l * t + k]));
    }
    ps[k] = Fp8ScaleFromAmax(FromBits(bits), fp8_max, /*pow2=*/false, ps[k]);
    pi[k] = 1.0f / ps[k];
  }
}

}  // namespace moefold::ops
