// Error-feedback gradient compressors (docs/FORMULAS.md §8.2) as ops: the sender's fused EF21
// update (encode C(v·a − h) into byte messages, h += what the receivers will decode) and the
// owner's weighted sum of decoded messages in member order. GPU and CPU run the same f32 arithmetic
// without contraction, so h, s and the messages are the same bits on both (NaN payloads aside).
//
// Message format for n elements and block B, fixed by n alone (all-to-all and all-gather counts are
// known before encoding):
//   identity: n f32 values.
//   int8:     ceil(n/B) f32 scales (absmax/127), then n int8 codes rint(x/scale) (half to even).
//   fp8:      ceil(n/B) f32 scales (absmax/448), then n E4M3 codes of x/scale (RNE, saturating, as
//             core/dtype.h and CUDA's cast). An all-zero block has scale 0 and codes 0; a block
//             holding Inf/NaN has scale NaN and codes 0, so it decodes to NaN on every side.
//   topk:     per block of b elements the k = max(1, round(b·fraction)) largest |x| (NaN counts as
//             largest; ties: the lower index) as (i32 index, f32 value) pairs, in index order.
// A NaN value travels as the quiet NaN 0x7FC00000 on every device (the devices' arithmetic
// propagates different payloads). Multi-byte fields are little-endian and may start at any byte
// (a part of a message batch starts at part·MessageBytes(n)). Every compressor is deterministic
// and positively homogeneous (C(a·x) = a·C(x) for a > 0).
//
//   ops::Ef21Encode(v, 1.0f, spec, &h, &messages, stream);       // (P·n) f32 → (P, bytes) u8
//   ops::Ef21DecodeSum(received, spec, weights, &s, stream);      // (M, bytes) u8 → s (n) f32
#pragma once

#include <cstdint>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

enum class CompressorKind { kIdentity, kInt8, kFp8, kTopK };

struct CompressorSpec {
  CompressorKind kind = CompressorKind::kInt8;
  int block = 128;              // B > 0
  float topk_fraction = 0.01f;  // in (0, 1]

  int64_t MessageBytes(int64_t n) const;    // bytes of the message for n elements
  int64_t TopKPerBlock(int64_t len) const;  // k of a Top-K block of len elements
};

// EF21's sender step over P parts of n elements (P = messages.dim(0)):
//   δ = v·v_scale − h;  messages[p] = C(δ[p·n, (p+1)·n));  h += deq(messages)  (per element, f32).
// Top-K indices are relative to their part. With h = 0 and v_scale = 1 this is a plain encode and
// h returns the decoding. v, h: (P·n) f32, any shape; messages (P, MessageBytes(n)) u8; all on one
// device. h is updated in place.
void Ef21Encode(const Tensor& v, float v_scale, const CompressorSpec& spec, Tensor* h,
                Tensor* messages, Stream& stream);

// The owner's step over M messages of n elements each (M = messages.dim(0)):
//   sum = Σ_{m = 0, 1, …, M−1} weights[m]·deq(messages[m])  (f32, from 0, in member order);
//   s += sum.
// messages (M, MessageBytes(n)) u8; weights (M) f32, or undefined for all 1; s (n) f32, updated in
// place; all on one device. A Top-K index outside its block is a corrupt message: the CPU fails
// MF_CHECK, the GPU kernel traps.
void Ef21DecodeSum(const Tensor& messages, const CompressorSpec& spec, const Tensor& weights,
                   Tensor* s, Stream& stream);

}  // namespace moefold::ops
