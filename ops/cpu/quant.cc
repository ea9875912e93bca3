// CPU reference of the EF21 compressors: block by block, each element's δ, code and decoding in
// one f32 expression each (x86-64 without FMA contracts nothing), which the CUDA kernels reproduce
// with round-to-nearest intrinsics. Messages are written byte-wise (fields may start anywhere).
#include "ops/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "core/dtype.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

int64_t NumBlocks(int64_t n, int block) { return (n + block - 1) / block; }

// |x| with NaN ordered as the largest: a strict weak order for Top-K, and a NaN is always sent.
float Magnitude(float x) {
  return std::isnan(x) ? std::numeric_limits<float>::infinity() : std::fabs(x);
}

// The per-element arithmetic both devices share. δ = v·a − h rounds the product first.
float Delta(float v, float v_scale, float h) { return v * v_scale - h; }

// A value as a message carries it: every NaN as the one quiet NaN 0x7FC00000, since the devices
// propagate different NaN payloads.
float MessageValue(float d) { return std::isnan(d) ? std::numeric_limits<float>::quiet_NaN() : d; }

float QuantCodeValue(CompressorKind kind, uint8_t code) {
  return kind == CompressorKind::kInt8 ? static_cast<float>(static_cast<int8_t>(code))
                                       : Fp8E4M3ToFloat(code);
}

// One part: n elements of v and h at `v`/`h`, its message at `out`.
void EncodePart(const CompressorSpec& spec, const float* v, float v_scale, float* h, int64_t n,
                uint8_t* out) {
  if (spec.kind == CompressorKind::kIdentity) {
    for (int64_t i = 0; i < n; ++i) {
      const float d = Delta(v[i], v_scale, h[i]), sent = MessageValue(d);
      std::memcpy(out + 4 * i, &sent, 4);
      h[i] += d;
    }
    return;
  }
  const int64_t blocks = NumBlocks(n, spec.block);
  if (spec.kind == CompressorKind::kTopK) {
    std::vector<float> d;
    std::vector<int64_t> order;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t lo = b * spec.block, len = std::min<int64_t>(spec.block, n - lo);
      const int64_t k = spec.TopKPerBlock(len);
      d.resize(len);
      for (int64_t i = 0; i < len; ++i) d[i] = Delta(v[lo + i], v_scale, h[lo + i]);
      order.resize(len);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t i, int64_t j) {
        const float ai = Magnitude(d[i]), aj = Magnitude(d[j]);
        return ai > aj || (ai == aj && i < j);
      });
      // The message lists the chosen entries in index order (the kernel's compaction order).
      std::sort(order.begin(), order.begin() + k);
      for (int64_t t = 0; t < k; ++t) {
        const int64_t i = order[t];
        const int32_t index = static_cast<int32_t>(lo + i);
        std::memcpy(out, &index, 4);
        const float sent = MessageValue(d[i]);
        std::memcpy(out + 4, &sent, 4);
        out += 8;
        h[lo + i] += d[i];
      }
    }
    return;
  }
  const float qmax = spec.kind == CompressorKind::kInt8 ? 127.0f : kFp8E4M3Max;
  uint8_t* codes = out + 4 * blocks;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lo = b * spec.block, hi = std::min<int64_t>(n, lo + spec.block);
    float amax = 0;
    bool finite = true;
    for (int64_t i = lo; i < hi; ++i) {
      const float d = Delta(v[i], v_scale, h[i]);
      amax = std::max(amax, std::fabs(d));  // a NaN is skipped here and caught by `finite`
      finite = finite && std::isfinite(d);
    }
    const float scale = finite ? amax / qmax : std::numeric_limits<float>::quiet_NaN();
    std::memcpy(out + 4 * b, &scale, 4);
    for (int64_t i = lo; i < hi; ++i) {
      const float d = Delta(v[i], v_scale, h[i]);
      const float y = scale > 0 ? d / scale : 0.0f;  // false for NaN
      if (spec.kind == CompressorKind::kInt8) {
        const float q = std::clamp(std::nearbyint(y), -127.0f, 127.0f);
        codes[i] = static_cast<uint8_t>(static_cast<int8_t>(q));
      } else {
        codes[i] = FloatToFp8E4M3(y);
      }
      h[i] += QuantCodeValue(spec.kind, codes[i]) * scale;
    }
  }
}

// acc[0, n) += weight · deq(message).
void DecodeAddPart(const CompressorSpec& spec, const uint8_t* message, int64_t n, float weight,
                   float* acc) {
  if (spec.kind == CompressorKind::kIdentity) {
    for (int64_t i = 0; i < n; ++i) {
      float value;
      std::memcpy(&value, message + 4 * i, 4);
      acc[i] += weight * value;
    }
    return;
  }
  const int64_t blocks = NumBlocks(n, spec.block);
  if (spec.kind == CompressorKind::kTopK) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t lo = b * spec.block, hi = std::min<int64_t>(n, lo + spec.block);
      for (int64_t t = spec.TopKPerBlock(hi - lo); t > 0; --t) {
        int32_t index;
        float value;
        std::memcpy(&index, message, 4);
        std::memcpy(&value, message + 4, 4);
        message += 8;
        MF_CHECK(index >= lo && index < hi) << "Ef21DecodeSum: corrupt Top-K message: index "
                                            << index << " in block [" << lo << ", " << hi << ")";
        acc[index] += weight * value;
      }
    }
    return;
  }
  const uint8_t* codes = message + 4 * blocks;
  for (int64_t b = 0; b < blocks; ++b) {
    float scale;
    std::memcpy(&scale, message + 4 * b, 4);
    const int64_t lo = b * spec.block, hi = std::min<int64_t>(n, lo + spec.block);
    for (int64_t i = lo; i < hi; ++i)
      acc[i] += weight * (QuantCodeValue(spec.kind, codes[i]) * scale);
  }
}

void CheckSpec(const CompressorSpec& spec, const char* op) {
  MF_CHECK(spec.block > 0) << op << ": compressor block " << spec.block;
  MF_CHECK(spec.topk_fraction > 0 && spec.topk_fraction <= 1)
      << op << ": Top-K fraction " << spec.topk_fraction;
}

}  // namespace

int64_t CompressorSpec::TopKPerBlock(int64_t len) const {
  return std::max<int64_t>(1, std::llround(static_cast<double>(len) * topk_fraction));
}

int64_t CompressorSpec::MessageBytes(int64_t n) const {
  switch (kind) {
    case CompressorKind::kIdentity:
      return 4 * n;
    case CompressorKind::kInt8:
    case CompressorKind::kFp8:
      return 4 * NumBlocks(n, block) + n;
    case CompressorKind::kTopK: {
      if (n == 0) return 0;
      const int64_t full = n / block, tail = n % block;
      return 8 * (full * TopKPerBlock(block) + (tail > 0 ? TopKPerBlock(tail) : 0));
    }
  }
  return 0;
}

void Ef21Encode(const Tensor& v, float v_scale, const CompressorSpec& spec, Tensor* h,
                Tensor* messages, Stream& stream) {
  constexpr const char* kOp = "Ef21Encode";
  MF_RETURN_IF_GPU(v, kOp, cuda::Ef21Encode(v, v_scale, spec, h, messages, stream));
  CheckSpec(spec, kOp);
  internal::CheckF32(v, kOp, "v");
  MF_CHECK(h != nullptr && messages != nullptr) << kOp << ": h or messages is null";
  internal::CheckF32(*h, kOp, "h");
  MF_CHECK_EQ(h->numel(), v.numel())
      << kOp << ": h " << h->DebugString() << " for v " << v.DebugString();
  internal::CheckCpu(*messages, kOp, "messages");
  internal::CheckDType(*messages, DType::kU8, kOp, "messages");
  internal::CheckRank(*messages, 2, kOp, "messages");
  const int64_t parts = messages->dim(0);
  MF_CHECK(parts > 0 && v.numel() % parts == 0)
      << kOp << ": " << v.numel() << " elements in " << parts << " parts";
  const int64_t n = v.numel() / parts, bytes = spec.MessageBytes(n);
  internal::CheckShape(*messages, {parts, bytes}, kOp, "messages");
  const float* pv = v.data<float>();
  float* ph = h->data<float>();
  uint8_t* out = messages->data<uint8_t>();
  for (int64_t p = 0; p < parts; ++p) {
    EncodePart(spec, pv + p * n, v_scale, ph + p * n, n, out + p * bytes);
  }
}

void Ef21DecodeSum(const Tensor& messages, const CompressorSpec& spec, const Tensor& weights,
                   Tensor* s, Stream& stream) {
  constexpr const char* kOp = "Ef21DecodeSum";
  MF_RETURN_IF_GPU(messages, kOp, cuda::Ef21DecodeSum(messages, spec, weights, s, stream));
  CheckSpec(spec, kOp);
  internal::CheckCpu(messages, kOp, "messages");
  internal::CheckDType(messages, DType::kU8, kOp, "messages");
  internal::CheckRank(messages, 2, kOp, "messages");
  MF_CHECK(s != nullptr) << kOp << ": s is null";
  internal::CheckF32(*s, kOp, "s");
  const int64_t members = messages.dim(0), n = s->numel(), bytes = spec.MessageBytes(n);
  internal::CheckShape(messages, {members, bytes}, kOp, "messages");
  const bool weighted = weights.defined() && weights.numel() > 0;
  if (weighted) {
    internal::CheckF32(weights, kOp, "weights");
    internal::CheckShape(weights, {members}, kOp, "weights");
  }
  // Every member's piece is summed first, in member order, then added to s: the same bits on every
  // owner and device whatever s holds.
  std::vector<float> sum(n, 0.0f);
  const uint8_t* in = messages.data<uint8_t>();
  for (int64_t m = 0; m < members; ++m) {
    const float w = weighted ? weights.data<float>()[m] : 1.0f;
    DecodeAddPart(spec, in + m * bytes, n, w, sum.data());
  }
  float* ps = s->data<float>();
  for (int64_t i = 0; i < n; ++i) ps[i] += sum[i];
}

}  // namespace moefold::ops
