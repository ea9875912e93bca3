// CPU conversions between f32 and the narrow float formats, bit-exact with CUDA's RNE/saturating casts.
#include "core/dtype.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace moefold {
namespace {

// A binary minifloat: 1 sign bit, `exp_bits`, `man_bits`. `ieee_special` formats (f16, e5m2) reserve
// the top exponent for inf/NaN; e4m3 (OCP "fn") has no inf and only the all-ones pattern is NaN.
struct Minifloat {
  int exp_bits;
  int man_bits;
  bool ieee_special;
  bool saturate;  // overflow -> ±max finite (fp8 SATFINITE) instead of ±inf (f16)

  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  uint32_t nan_code() const { return (1u << (exp_bits + man_bits)) - 1; }  // all ones, sign clear
  uint32_t max_code() const {
    return ieee_special ? (((1u << exp_bits) - 2) << man_bits) | ((1u << man_bits) - 1)
                        : nan_code() - 1;
  }
  uint32_t inf_code() const { return ((1u << exp_bits) - 1) << man_bits; }

  double Decode(uint32_t code) const {
    const uint32_t sign = code >> (exp_bits + man_bits) & 1;
    const uint32_t mag = code & nan_code();
    const uint32_t e = mag >> man_bits;
    const uint32_t m = mag & ((1u << man_bits) - 1);
    double v;
    if (ieee_special && e == (1u << exp_bits) - 1) {
      v = m == 0 ? INFINITY : NAN;
    } else if (!ieee_special && mag == nan_code()) {
      v = NAN;
    } else if (e == 0) {
      v = std::ldexp(static_cast<double>(m), 1 - bias() - man_bits);
    } else {
      v = std::ldexp(static_cast<double>(m + (1u << man_bits)), static_cast<int>(e) - bias() - man_bits);
    }
    return sign ? -v : v;
  }

  uint32_t Encode(float x) const {
    const uint32_t sign_bit = 1u << (exp_bits + man_bits);
    const uint32_t sign = std::signbit(x) ? sign_bit : 0;
    if (std::isnan(x)) return ieee_special && !saturate ? nan_code() : (nan_code() | sign);
    const double a = std::fabs(static_cast<double>(x));
    const double max_value = Decode(max_code());
    if (std::isinf(a)) return (saturate ? max_code() : inf_code()) | sign;
    if (a == 0) return sign;
    int k;
    std::frexp(a, &k);  // a = f * 2^k, f in [0.5, 1)
    const int emin = 1 - bias();
    int e = std::max(k - 1, emin);
    // Scaling by a power of two is exact in double; nearbyint rounds half to even.
    double n = std::nearbyint(std::ldexp(a, man_bits - e));
    if (n >= std::ldexp(1.0, man_bits + 1)) {
      n /= 2;
      ++e;
    }
    const double rounded = std::ldexp(n, e - man_bits);
    if (rounded > max_value) return (saturate ? max_code() : inf_code()) | sign;
    const uint32_t ni = static_cast<uint32_t>(n);
    if (ni < (1u << man_bits)) return sign | ni;  // subnormal (e == emin)
    return sign | static_cast<uint32_t>(e + bias()) << man_bits | (ni - (1u << man_bits));
  }
};

constexpr Minifloat kF16{5, 10, true, false};
constexpr Minifloat kE4M3{4, 3, false, true};
constexpr Minifloat kE5M2{5, 2, true, true};

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kFp8E4M3: return 1;
    case DType::kFp8E5M2: return 1;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
  }
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kFp8E4M3: return "fp8_e4m3";
    case DType::kFp8E5M2: return "fp8_e5m2";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kU8: return "u8";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kFp8E4M3, DType::kFp8E5M2,
                  DType::kI32, DType::kI64, DType::kU8}) {
    if (DTypeName(d) == name) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (expected f32, bf16, f16, fp8_e4m3, fp8_e5m2, i32, i64, u8)"));
}

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16 ||
         dtype == DType::kFp8E4M3 || dtype == DType::kFp8E5M2;
}

uint16_t FloatToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return 0x7FFF;
  // Round to nearest even on the 16 dropped bits; a carry into the exponent overflows to inf as on GPU.
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float Bf16ToFloat(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

uint16_t FloatToF16(float x) { return static_cast<uint16_t>(kF16.Encode(x)); }
float F16ToFloat(uint16_t bits) { return static_cast<float>(kF16.Decode(bits)); }
uint8_t FloatToFp8E4M3(float x) { return static_cast<uint8_t>(kE4M3.Encode(x)); }
float Fp8E4M3ToFloat(uint8_t bits) { return static_cast<float>(kE4M3.Decode(bits)); }
uint8_t FloatToFp8E5M2(float x) { return static_cast<uint8_t>(kE5M2.Encode(x)); }
float Fp8E5M2ToFloat(uint8_t bits) { return static_cast<float>(kE5M2.Decode(bits)); }

float RoundTrip(float x, DType dtype) {
  switch (dtype) {
    case DType::kF32: return x;
    case DType::kBF16: return Bf16ToFloat(FloatToBf16(x));
    case DType::kF16: return F16ToFloat(FloatToF16(x));
    case DType::kFp8E4M3: return Fp8E4M3ToFloat(FloatToFp8E4M3(x));
    case DType::kFp8E5M2: return Fp8E5M2ToFloat(FloatToFp8E5M2(x));
    default: MF_CHECK(false) << "RoundTrip needs a floating dtype, got " << DTypeName(dtype);
  }
  return x;
}

void ConvertToF32(const void* src, DType src_dtype, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    switch (src_dtype) {
      case DType::kF32: dst[i] = static_cast<const float*>(src)[i]; break;
      case DType::kBF16: dst[i] = Bf16ToFloat(static_cast<const uint16_t*>(src)[i]); break;
      case DType::kF16: dst[i] = F16ToFloat(static_cast<const uint16_t*>(src)[i]); break;
      case DType::kFp8E4M3: dst[i] = Fp8E4M3ToFloat(static_cast<const uint8_t*>(src)[i]); break;
      case DType::kFp8E5M2: dst[i] = Fp8E5M2ToFloat(static_cast<const uint8_t*>(src)[i]); break;
      case DType::kI32: dst[i] = static_cast<float>(static_cast<const int32_t*>(src)[i]); break;
      case DType::kI64: dst[i] = static_cast<float>(static_cast<const int64_t*>(src)[i]); break;
      case DType::kU8: dst[i] = static_cast<float>(static_cast<const uint8_t*>(src)[i]); break;
    }
  }
}

void ConvertFromF32(const float* src, void* dst, DType dst_dtype, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    switch (dst_dtype) {
      case DType::kF32: static_cast<float*>(dst)[i] = src[i]; break;
      case DType::kBF16: static_cast<uint16_t*>(dst)[i] = FloatToBf16(src[i]); break;
      case DType::kF16: static_cast<uint16_t*>(dst)[i] = FloatToF16(src[i]); break;
      case DType::kFp8E4M3: static_cast<uint8_t*>(dst)[i] = FloatToFp8E4M3(src[i]); break;
      case DType::kFp8E5M2: static_cast<uint8_t*>(dst)[i] = FloatToFp8E5M2(src[i]); break;
      case DType::kI32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(src[i]); break;
      case DType::kI64: static_cast<int64_t*>(dst)[i] = static_cast<int64_t>(src[i]); break;
      case DType::kU8: static_cast<uint8_t*>(dst)[i] = static_cast<uint8_t>(src[i]); break;
    }
  }
}

}  // namespace moefold
