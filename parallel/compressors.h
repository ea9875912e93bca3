// Gradient compressors for error feedback (docs/FORMULAS.md §8.2), as byte messages of a fixed size
// that depends only on the element count (so all-to-all and all-gather counts are known up front):
//   identity: f32 values; int8: per-block absmax scale (f32) + int8 codes, round half to even;
//   fp8: per-block scale = absmax/448 + E4M3 codes (RNE, saturating, as CUDA's cast);
//   topk: per block of B elements the k = max(1, round(B·fraction)) largest |x| (ties: lower index)
//         as (int32 index, f32 value) pairs.
// Every compressor here is deterministic and positively homogeneous (C(a·x) = a·C(x), a > 0), and
// lets non-finite input through: a quantizer block holding Inf/NaN decodes to NaN, Top-K sends NaN.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moefold::parallel {

enum class CompressorKind { kIdentity, kInt8, kFp8, kTopK };
absl::StatusOr<CompressorKind> ParseCompressor(absl::string_view name);

struct Compressor {
  CompressorKind kind = CompressorKind::kInt8;
  int block = 128;
  float topk_fraction = 0.01f;

  int64_t MessageBytes(int64_t n) const;  // bytes of the message for n elements
  // Writes the message for x[0, n) into out (MessageBytes(n) bytes) and adds what the receiver will
  // decode to `decoded` (n floats): decoded += deq(C(x)). For Top-K, indices are relative to x.
  void Encode(const float* x, int64_t n, uint8_t* out, float* decoded) const;
  // acc[0, n) += scale · deq(message).
  void DecodeAdd(const uint8_t* message, int64_t n, float scale, float* acc) const;
};

}  // namespace moefold::parallel
