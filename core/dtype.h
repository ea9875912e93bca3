// Element types and their CPU conversions. Conversions round to nearest even and saturate the way the
// CUDA intrinsics do, so CPU tests can emulate GPU low precision exactly:
//   bf16, f16: __float2bfloat16 / __float2half (RNE, overflow -> inf, NaN -> canonical 0x7FFF);
//   fp8:       __nv_cvt_float_to_fp8(x, __NV_SATFINITE, ...) (RNE, |x| > max -> ±max, inf -> ±max,
//              NaN -> 0x7F with the input's sign).
#pragma once

#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moefold {

enum class DType : uint8_t { kF32, kBF16, kF16, kFp8E4M3, kFp8E5M2, kI32, kI64, kU8 };

size_t DTypeSize(DType dtype);
absl::string_view DTypeName(DType dtype);  // "f32", "bf16", "f16", "fp8_e4m3", "fp8_e5m2", "i32", ...
absl::StatusOr<DType> ParseDType(absl::string_view name);
bool IsFloatingPoint(DType dtype);

// Scalar conversions (bit patterns held in integers of the storage width).
uint16_t FloatToBf16(float x);
float Bf16ToFloat(uint16_t bits);
uint16_t FloatToF16(float x);
float F16ToFloat(uint16_t bits);
uint8_t FloatToFp8E4M3(float x);
float Fp8E4M3ToFloat(uint8_t bits);
uint8_t FloatToFp8E5M2(float x);
float Fp8E5M2ToFloat(uint8_t bits);

inline constexpr float kFp8E4M3Max = 448.0f;
inline constexpr float kFp8E5M2Max = 57344.0f;

// Rounds x through `dtype` and back: the value a kernel storing `dtype` would see.
float RoundTrip(float x, DType dtype);

// Bulk conversions between a buffer of `dtype` and f32 (any floating or integer dtype).
void ConvertToF32(const void* src, DType src_dtype, float* dst, size_t n);
void ConvertFromF32(const float* src, void* dst, DType dst_dtype, size_t n);

}  // namespace moefold
