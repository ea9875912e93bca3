// CPU reference of the reductions: Σx² in f64 (gradient clipping) and max|x| (FP8 scaling).
// Amax reads any floating dtype through the exact CPU conversions, in small chunks.
#include "ops/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/cpu/check.h"

namespace moefold::ops {

double SumOfSquares(const Tensor& x, Stream& stream) {
  MF_RETURN_IF_GPU(x, "SumOfSquares", cuda::SumOfSquares(x, stream));
  internal::CheckCpu(x, "SumOfSquares", "x");
  MF_CHECK(x.dtype() == DType::kF32 || x.dtype() == DType::kBF16)
      << "SumOfSquares: x must be f32 or bf16, got " << x.DebugString();
  const Tensor wide = x.To(DType::kF32, stream);  // x itself when f32
  const float* p = wide.data<float>();
  double sum = 0;
  for (int64_t i = 0; i < x.numel(); ++i) sum += static_cast<double>(p[i]) * p[i];
  return sum;
}

void SumOfSquaresInto(const Tensor& x, Tensor* acc, Stream& stream) {
  MF_RETURN_IF_GPU(x, "SumOfSquaresInto", cuda::SumOfSquaresInto(x, acc, stream));
  MF_CHECK(acc != nullptr) << "SumOfSquaresInto: output acc is null";
  internal::CheckCpu(*acc, "SumOfSquaresInto", "acc");
  internal::CheckDType(*acc, DType::kI64, "SumOfSquaresInto", "acc");
  internal::CheckShape(*acc, {1}, "SumOfSquaresInto", "acc");
  *static_cast<double*>(acc->raw_data()) += SumOfSquares(x, stream);
}

float Amax(const Tensor& x, Stream& stream) {
  MF_RETURN_IF_GPU(x, "Amax", cuda::Amax(x, stream));
  internal::CheckCpu(x, "Amax", "x");
  MF_CHECK(IsFloatingPoint(x.dtype()))
      << "Amax: x must be a floating dtype, got " << x.DebugString();
  constexpr int64_t kChunk = 4096;
  float buffer[kChunk];
  const char* bytes = static_cast<const char*>(x.raw_data());
  const size_t elem = DTypeSize(x.dtype());
  float amax = 0.0f;
  for (int64_t begin = 0; begin < x.numel(); begin += kChunk) {
    const int64_t n = std::min(kChunk, x.numel() - begin);
    ConvertToF32(bytes + begin * elem, x.dtype(), buffer, static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      // std::max would drop a NaN; a NaN amax must surface so the FP8 recipe can react.
      if (std::isnan(buffer[i])) return std::numeric_limits<float>::quiet_NaN();
      amax = std::max(amax, std::fabs(buffer[i]));
    }
  }
  return amax;
}

}  // namespace moefold::ops
