// The CPU FP8 casts shared by ops/cpu/fp8.cc and ops/cpu/fp8_fused.cc (internal to ops/cpu):
// amax bits, the GPU's x·scale, and core/dtype.h's saturating RNE casts with a fast path. One
// definition, so the fused producers round exactly as the unfused quantisers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/dtype.h"

namespace moefold::ops::internal {

// |v| as bits, every NaN as the quiet NaN: unsigned order is then the order of magnitudes.
inline uint32_t AbsBits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits &= 0x7fffffffu;
  return bits > 0x7f800000u ? 0x7fc00000u : bits;
}

inline float FromBits(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

inline bool IsFp8(DType dtype) { return dtype == DType::kFp8E4M3 || dtype == DType::kFp8E5M2; }

// x·scale as the GPU's __fmul_rn gives it: a NaN product is the canonical +NaN (x86 would keep
// the NaN operand's sign, and the sign reaches the FP8 code).
inline float Scaled(float x, float scale) {
  const float p = x * scale;
  return std::isnan(p) ? std::numeric_limits<float>::quiet_NaN() : p;
}

// The RNE rounding of a normal float whose FP8 result is normal, on its bits: add half an FP8
// ulp (minus one, plus the kept mantissa's lowest bit: ties to even) and cut the dropped bits;
// a carry out of the mantissa steps the exponent, as it should. `drop` mantissa bits go,
// `rebias` moves f32's exponent bias to the format's.
inline uint8_t RoundNormal(uint32_t bits, int drop, uint32_t rebias) {
  const uint32_t mag = bits & 0x7fffffffu;
  const uint32_t rounded = mag + ((1u << (drop - 1)) - 1) + ((mag >> drop) & 1u);
  return static_cast<uint8_t>(((rounded >> drop) - rebias) | ((bits >> 24) & 0x80u));
}

// core/dtype.h's saturating RNE casts, with a fast path for the common case: |v| inside the
// format's normal range (E4M3 [2⁻⁶, 448], E5M2 [2⁻¹⁴, 57344]), where the rounding cannot leave
// it. Zeros, subnormals, saturation, Inf and NaN take the general conversion. The test
// "Fp8CastTest.FastPathEqualsTheGeneralCast" checks every rounding boundary against it.
inline uint8_t CastFp8(float v, DType dtype) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t mag = bits & 0x7fffffffu;
  if (dtype == DType::kFp8E4M3) {
    // 2⁻⁶ = 0x3c800000, 448 = 0x43e00000; exponent bias 127 → 7 over 3 mantissa bits.
    if (mag >= 0x3c800000u && mag <= 0x43e00000u) return RoundNormal(bits, 20, (127 - 7) << 3);
    return FloatToFp8E4M3(v);
  }
  // 2⁻¹⁴ = 0x38800000, 57344 = 0x47600000; bias 127 → 15 over 2 mantissa bits.
  if (mag >= 0x38800000u && mag <= 0x47600000u) return RoundNormal(bits, 21, (127 - 15) << 2);
  return FloatToFp8E5M2(v);
}

}  // namespace moefold::ops::internal
