// Compressor encodings and decodings.
#include "parallel/compressors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/dtype.h"
#include "core/status.h"

namespace moefold::parallel {
namespace {

int64_t NumBlocks(int64_t n, int block) { return (n + block - 1) / block; }

int64_t TopKPerBlock(int64_t block_len, float fraction) {
  return std::max<int64_t>(1, std::llround(static_cast<double>(block_len) * fraction));
}

// |x| with NaN ordered as the largest: a strict weak order for Top-K, and a NaN is always sent.
float Magnitude(float x) {
  return std::isnan(x) ? std::numeric_limits<float>::infinity() : std::fabs(x);
}

}  // namespace

absl::StatusOr<CompressorKind> ParseCompressor(absl::string_view name) {
  if (name == "identity") return CompressorKind::kIdentity;
  if (name == "int8") return CompressorKind::kInt8;
  if (name == "fp8") return CompressorKind::kFp8;
  if (name == "topk") return CompressorKind::kTopK;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown compressor '", name, "' (identity, int8, fp8, topk)"));
}

int64_t Compressor::MessageBytes(int64_t n) const {
  switch (kind) {
    case CompressorKind::kIdentity:
      return 4 * n;
    case CompressorKind::kInt8:
    case CompressorKind::kFp8:
      return 4 * NumBlocks(n, block) + n;
    case CompressorKind::kTopK: {
      int64_t pairs = 0;
      for (int64_t b = 0; b < n; b += block) {
        pairs += TopKPerBlock(std::min<int64_t>(block, n - b), topk_fraction);
      }
      return 8 * pairs;
    }
  }
  return 0;
}

void Compressor::Encode(const float* x, int64_t n, uint8_t* out, float* decoded) const {
  if (kind == CompressorKind::kIdentity) {
    std::memcpy(out, x, 4 * n);
    for (int64_t i = 0; i < n; ++i) decoded[i] += x[i];
    return;
  }
  if (kind == CompressorKind::kTopK) {
    std::vector<int64_t> order;
    for (int64_t b = 0; b < n; b += block) {
      const int64_t len = std::min<int64_t>(block, n - b), k = TopKPerBlock(len, topk_fraction);
      order.resize(len);
      std::iota(order.begin(), order.end(), b);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t i, int64_t j) {
        const float ai = Magnitude(x[i]), aj = Magnitude(x[j]);
        return ai > aj || (ai == aj && i < j);
      });
      for (int64_t t = 0; t < k; ++t) {
        const int32_t index = static_cast<int32_t>(order[t]);
        std::memcpy(out, &index, 4);
        std::memcpy(out + 4, &x[index], 4);
        out += 8;
        decoded[index] += x[index];
      }
    }
    return;
  }
  const float qmax = kind == CompressorKind::kInt8 ? 127.0f : kFp8E4M3Max;
  const int64_t blocks = NumBlocks(n, block);
  uint8_t* codes = out + 4 * blocks;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * block, hi = std::min<int64_t>(n, lo + block);
    float amax = 0;
    bool finite = true;
    for (int64_t i = lo; i < hi; ++i) {
      amax = std::max(amax, std::fabs(x[i]));
      finite = finite && std::isfinite(x[i]);
    }
    // 0 for an all-zero block: codes 0, decodes to 0. A block holding Inf/NaN sends scale NaN and
    // codes 0, so it decodes to NaN on both sides and the anomaly check downstream sees it.
    const float scale = finite ? amax / qmax : std::numeric_limits<float>::quiet_NaN();
    std::memcpy(out + 4 * b, &scale, 4);
    for (int64_t i = lo; i < hi; ++i) {
      const float y = scale > 0 ? x[i] / scale : 0.0f;  // false for NaN
      if (kind == CompressorKind::kInt8) {
        const float q = std::clamp(std::nearbyint(y), -127.0f, 127.0f);
        codes[i] = static_cast<uint8_t>(static_cast<int8_t>(q));
        decoded[i] += q * scale;
      } else {
        codes[i] = FloatToFp8E4M3(y);
        decoded[i] += Fp8E4M3ToFloat(codes[i]) * scale;
      }
    }
  }
}

void Compressor::DecodeAdd(const uint8_t* message, int64_t n, float weight, float* acc) const {
  if (kind == CompressorKind::kIdentity) {
    for (int64_t i = 0; i < n; ++i) {
      float v;
      std::memcpy(&v, message + 4 * i, 4);
      acc[i] += weight * v;
    }
    return;
  }
  if (kind == CompressorKind::kTopK) {
    const int64_t pairs = MessageBytes(n) / 8;
    for (int64_t t = 0; t < pairs; ++t) {
      int32_t index;
      float v;
      std::memcpy(&index, message + 8 * t, 4);
      std::memcpy(&v, message + 8 * t + 4, 4);
      MF_CHECK(index >= 0 && index < n) << "corrupt Top-K message: index " << index << " of " << n;
      acc[index] += weight * v;
    }
    return;
  }
  const int64_t blocks = NumBlocks(n, block);
  const uint8_t* codes = message + 4 * blocks;
  for (int64_t b = 0; b < blocks; ++b) {
    float scale;
    std::memcpy(&scale, message + 4 * b, 4);
    const int64_t lo = b * block, hi = std::min<int64_t>(n, lo + block);
    for (int64_t i = lo; i < hi; ++i) {
      const float q = kind == CompressorKind::kInt8
                          ? static_cast<float>(static_cast<int8_t>(codes[i]))
                          : Fp8E4M3ToFloat(codes[i]);
      acc[i] += weight * (q * scale);
    }
  }
}

}  // namespace moefold::parallel
