// CUDA EF21 compressors (ops/quant.h): one thread block per compressor block for the sender (its
// absmax, or its Top-K by a 4-pass radix select on |δ|'s bits and an index-ordered compaction),
// one thread per element (quantizers) or per compressor block (Top-K) for the owner's sum. Every
// value goes through the CPU reference's f32 operations as round-to-nearest intrinsics (no FMA
// contraction), so the bits equal the CPU's; message fields are moved byte by byte because a part
// of a message batch may start at any byte. Reductions are max, AND and counts: order-free.
#include <cstdint>
#include <cstdio>

#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/quant.h"

namespace moefold::ops::cuda {
namespace {

constexpr int kMaxThreads = 256;

// Threads for one compressor block of B elements: a multiple of 32, at most kMaxThreads.
int BlockThreads(int block) {
  const int rounded = (block + 31) / 32 * 32;
  return rounded < kMaxThreads ? rounded : kMaxThreads;
}

__device__ __forceinline__ void StoreWord(uint8_t* p, uint32_t bits) {
  p[0] = static_cast<uint8_t>(bits);
  p[1] = static_cast<uint8_t>(bits >> 8);
  p[2] = static_cast<uint8_t>(bits >> 16);
  p[3] = static_cast<uint8_t>(bits >> 24);
}

__device__ __forceinline__ uint32_t LoadWord(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

// δ = v·a − h, the product rounded first as on the CPU.
__device__ __forceinline__ float Delta(const float* v, float v_scale, const float* h, int64_t i) {
  return __fsub_rn(__fmul_rn(v[i], v_scale), h[i]);
}

// A value as a message carries it: every NaN as the CPU's quiet NaN 0x7FC00000 (the GPU's own
// NaNs are 0x7FFFFFFF).
__device__ __forceinline__ uint32_t MessageBits(float d) {
  return isnan(d) ? 0x7fc00000u : __float_as_uint(d);
}

// The value of a quantizer code (before its block's scale).
template <CompressorKind K>
__device__ __forceinline__ float CodeValue(uint8_t code) {
  if constexpr (K == CompressorKind::kInt8) {
    return static_cast<float>(static_cast<int8_t>(code));
  } else {
    __nv_fp8_e4m3 e;
    e.__x = code;
    return static_cast<float>(e);
  }
}

// Max over the block of non-negative values (blockDim.x a multiple of 32); every thread gets it.
__device__ float BlockMax(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Exclusive count of `flag` over the block in thread order (*rank) and the block's total.
__device__ void BlockCount(bool flag, int* rank, int* total) {
  __shared__ int warp_totals[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned ballot = __ballot_sync(0xffffffffu, flag);
  __syncthreads();  // warp_totals may still be read by a previous call
  if (lane == 0) warp_totals[warp] = __popc(ballot);
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) {
    before += w < warp ? warp_totals[w] : 0;
    all += warp_totals[w];
  }
  *rank = before + __popc(ballot & ((1u << lane) - 1u));
  *total = all;
}

// Where one part's message and elements are: item g of parts·blocks is block g % blocks of part
// g / blocks.
struct Layout {
  int64_t n;       // elements per part
  int block;       // B
  int64_t blocks;  // ceil(n / B) per part
  int64_t bytes;   // MessageBytes(n)
  int64_t items;   // parts · blocks
  int k_full;      // Top-K: k of a full block
  int k_last;      // Top-K: k of the part's last block
};

// Quantizers: block absmax of δ (skipping NaN; `finite` catches it), the scale, then each element's
// code and h += code·scale.
template <CompressorKind K>
__global__ void QuantizeKernel(const float* v, float v_scale, float* h, uint8_t* messages,
                               Layout L) {
  const float qmax = K == CompressorKind::kInt8 ? 127.0f : 448.0f;
  for (int64_t g = blockIdx.x; g < L.items; g += gridDim.x) {
    const int64_t part = g / L.blocks, b = g % L.blocks;
    const int64_t lo = b * L.block, hi = min(L.n, lo + L.block);
    const float* pv = v + part * L.n;
    float* ph = h + part * L.n;
    uint8_t* message = messages + part * L.bytes;
    float amax = 0.0f;
    bool finite = true;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      const float d = Delta(pv, v_scale, ph, i);
      amax = fmaxf(amax, fabsf(d));
      finite = finite && isfinite(d);
    }
    amax = BlockMax(amax);
    finite = __syncthreads_and(finite) != 0;
    const float scale = finite ? __fdiv_rn(amax, qmax) : __int_as_float(0x7fc00000);
    if (threadIdx.x == 0) StoreWord(message + 4 * b, __float_as_uint(scale));
    uint8_t* codes = message + 4 * L.blocks;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      const float d = Delta(pv, v_scale, ph, i);
      const float y = scale > 0.0f ? __fdiv_rn(d, scale) : 0.0f;  // false for NaN
      uint8_t code;
      if constexpr (K == CompressorKind::kInt8) {
        const float q = fminf(fmaxf(rintf(y), -127.0f), 127.0f);
        code = static_cast<uint8_t>(static_cast<int8_t>(q));
      } else {
        code = __nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
      }
      codes[i] = code;
      ph[i] = __fadd_rn(ph[i], __fmul_rn(CodeValue<K>(code), scale));
    }
    __syncthreads();  // the next item's reductions reuse the shared partials
  }
}

// Identity: the δ values themselves.
__global__ void IdentityKernel(const float* v, float v_scale, float* h, uint8_t* messages,
                               int64_t n, int64_t total) {
  for (int64_t j = FirstThread(); j < total; j += GridThreads()) {
    const int64_t part = j / n, i = j % n;
    const float d = Delta(v, v_scale, h, j);
    StoreWord(messages + part * 4 * n + 4 * i, MessageBits(d));
    h[j] = __fadd_rn(h[j], d);
  }
}

// |δ| as ordered bits: for non-negative floats the integer order is the float order; NaN counts
// as +Inf, the largest (ties with Inf go to the lower index, as on the CPU).
__device__ __forceinline__ uint32_t MagnitudeKey(float d) {
  return isnan(d) ? 0x7f800000u : (__float_as_uint(d) & 0x7fffffffu);
}

// Top-K of each block: a radix select finds the k-th largest key T and how many entries equal to
// T are taken (the lowest indices); a block-wide count in index order places the chosen pairs.
__global__ void TopKKernel(const float* v, float v_scale, float* h, uint8_t* messages, Layout L) {
  __shared__ int histogram[256];
  __shared__ uint32_t shared_prefix;
  __shared__ int shared_remaining;
  for (int64_t g = blockIdx.x; g < L.items; g += gridDim.x) {
    const int64_t part = g / L.blocks, b = g % L.blocks;
    const int64_t lo = b * L.block, hi = min(L.n, lo + L.block);
    const int k = b == L.blocks - 1 ? L.k_last : L.k_full;
    const float* pv = v + part * L.n;
    float* ph = h + part * L.n;
    uint8_t* pairs = messages + part * L.bytes + 8 * b * int64_t{L.k_full};
    // Keys matching `prefix` under `mask` are the candidates; `remaining` of them are still to be
    // taken, from the top. 1 ≤ k ≤ hi − lo keeps remaining ≤ candidates at every pass.
    uint32_t prefix = 0, mask = 0;
    int remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = threadIdx.x; i < 256; i += blockDim.x) histogram[i] = 0;
      __syncthreads();
      for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const uint32_t key = MagnitudeKey(Delta(pv, v_scale, ph, i));
        if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        int above = 0, digit = 255;
        for (; digit > 0 && above + histogram[digit] < remaining; --digit)
          above += histogram[digit];
        shared_prefix = prefix | static_cast<uint32_t>(digit) << shift;
        shared_remaining = remaining - above;
      }
      __syncthreads();
      prefix = shared_prefix;
      remaining = shared_remaining;
      mask |= 255u << shift;
    }
    // prefix is now the k-th largest key T; take every key > T and the first `remaining` keys == T.
    int equal_before = 0, taken_before = 0;
    for (int64_t base = lo; base < hi; base += blockDim.x) {
      const int64_t i = base + threadIdx.x;
      const bool valid = i < hi;
      const float d = valid ? Delta(pv, v_scale, ph, i) : 0.0f;
      const uint32_t key = MagnitudeKey(d);
      int equal_rank, equal_total, taken_rank, taken_total;
      BlockCount(valid && key == prefix, &equal_rank, &equal_total);
      const bool take =
          valid && (key > prefix || (key == prefix && equal_before + equal_rank < remaining));
      BlockCount(take, &taken_rank, &taken_total);
      if (take) {
        uint8_t* pair = pairs + 8 * int64_t{taken_before + taken_rank};
        StoreWord(pair, static_cast<uint32_t>(static_cast<int32_t>(i)));
        StoreWord(pair + 4, MessageBits(d));
        ph[i] = __fadd_rn(ph[i], d);
      }
      equal_before += equal_total;
      taken_before += taken_total;
    }
    __syncthreads();  // the next item's histogram must not be cleared while thread 0 reads it
  }
}

// Owner, quantizers and identity: element i of s gets Σ_m w_m·deq_m(i) in member order, then s.
template <CompressorKind K>
__global__ void DecodeSumKernel(const uint8_t* messages, int members, const float* weights,
                                Layout L, float* s) {
  for (int64_t i = FirstThread(); i < L.n; i += GridThreads()) {
    float sum = 0.0f;
    for (int m = 0; m < members; ++m) {
      const uint8_t* message = messages + m * L.bytes;
      float value;
      if constexpr (K == CompressorKind::kIdentity) {
        value = __uint_as_float(LoadWord(message + 4 * i));
      } else {
        const float scale = __uint_as_float(LoadWord(message + 4 * (i / L.block)));
        value = __fmul_rn(CodeValue<K>(message[4 * L.blocks + i]), scale);
      }
      sum = __fadd_rn(sum, __fmul_rn(weights == nullptr ? 1.0f : weights[m], value));
    }
    s[i] = __fadd_rn(s[i], sum);
  }
}

// Owner, Top-K: per compressor block, the members' pairs are added into `sum` (zeroed here) one
// member after the other (indices are distinct within a member's block, so threads never collide),
// then sum into s.
__global__ void TopKDecodeSumKernel(const uint8_t* messages, int members, const float* weights,
                                    Layout L, float* sum, float* s) {
  for (int64_t b = blockIdx.x; b < L.blocks; b += gridDim.x) {
    const int64_t lo = b * L.block, hi = min(L.n, lo + L.block);
    const int k = b == L.blocks - 1 ? L.k_last : L.k_full;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) sum[i] = 0.0f;
    __syncthreads();
    for (int m = 0; m < members; ++m) {
      const uint8_t* pairs = messages + m * L.bytes + 8 * b * int64_t{L.k_full};
      const float w = weights == nullptr ? 1.0f : weights[m];
      for (int t = threadIdx.x; t < k; t += blockDim.x) {
        const int64_t index = static_cast<int32_t>(LoadWord(pairs + 8 * t));
        const float value = __uint_as_float(LoadWord(pairs + 8 * t + 4));
        if (index < lo || index >= hi) {
          printf(
              "moefold Ef21DecodeSum: corrupt Top-K message: member %d index %lld outside block "
              "[%lld, %lld)\n",
              m, static_cast<long long>(index), static_cast<long long>(lo),
              static_cast<long long>(hi));
          __trap();
        }
        sum[index] = __fadd_rn(sum[index], __fmul_rn(w, value));
      }
      __syncthreads();  // member m's adds land before member m + 1's
    }
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s[i] = __fadd_rn(s[i], sum[i]);
    __syncthreads();
  }
}

Layout MakeLayout(const CompressorSpec& spec, int64_t n, int64_t parts) {
  Layout L;
  L.n = n;
  L.block = spec.block;
  L.blocks = (n + spec.block - 1) / spec.block;
  L.bytes = spec.MessageBytes(n);
  L.items = parts * L.blocks;
  L.k_full = static_cast<int>(spec.TopKPerBlock(spec.block));
  L.k_last = static_cast<int>(spec.TopKPerBlock(n - (L.blocks - 1) * spec.block));
  return L;
}

void CheckSpec(const CompressorSpec& spec, const char* op) {
  MF_CHECK(spec.block > 0) << op << ": compressor block " << spec.block;
  MF_CHECK(spec.topk_fraction > 0 && spec.topk_fraction <= 1)
      << op << ": Top-K fraction " << spec.topk_fraction;
}

}  // namespace

void Ef21Encode(const Tensor& v, float v_scale, const CompressorSpec& spec, Tensor* h,
                Tensor* messages, Stream& stream) {
  constexpr const char* kOp = "Ef21Encode";
  const Device dev = v.device();
  CheckStream(stream, dev, kOp);
  CheckSpec(spec, kOp);
  CheckOn(v, dev, kOp, "v");
  CheckDType(v, DType::kF32, kOp, "v");
  MF_CHECK(h != nullptr && messages != nullptr) << kOp << ": h or messages is null";
  CheckOn(*h, dev, kOp, "h");
  CheckDType(*h, DType::kF32, kOp, "h");
  MF_CHECK_EQ(h->numel(), v.numel())
      << kOp << ": h " << h->DebugString() << " for v " << v.DebugString();
  CheckOn(*messages, dev, kOp, "messages");
  CheckDType(*messages, DType::kU8, kOp, "messages");
  CheckRank(*messages, 2, kOp, "messages");
  const int64_t parts = messages->dim(0);
  MF_CHECK(parts > 0 && v.numel() % parts == 0)
      << kOp << ": " << v.numel() << " elements in " << parts << " parts";
  const int64_t n = v.numel() / parts;
  const Layout L = MakeLayout(spec, n, parts);
  CheckShape(*messages, {parts, L.bytes}, kOp, "messages");
  if (n == 0) return;
  const float* pv = v.data<float>();
  float* ph = h->data<float>();
  uint8_t* out = messages->data<uint8_t>();
  const cudaStream_t s = Native(stream);
  const int threads = BlockThreads(spec.block);
  const int grid = DeviceGrid(L.items, 1, threads, stream);
  switch (spec.kind) {
    case CompressorKind::kIdentity:
      IdentityKernel<<<DeviceGrid(v.numel(), kMaxThreads, kMaxThreads, stream), kMaxThreads, 0,
                       s>>>(pv, v_scale, ph, out, n, v.numel());
      break;
    case CompressorKind::kInt8:
      QuantizeKernel<CompressorKind::kInt8><<<grid, threads, 0, s>>>(pv, v_scale, ph, out, L);
      break;
    case CompressorKind::kFp8:
      QuantizeKernel<CompressorKind::kFp8><<<grid, threads, 0, s>>>(pv, v_scale, ph, out, L);
      break;
    case CompressorKind::kTopK:
      TopKKernel<<<grid, threads, 0, s>>>(pv, v_scale, ph, out, L);
      break;
  }
  MF_CUDA_CHECK_LAUNCH();
}

void Ef21DecodeSum(const Tensor& messages, const CompressorSpec& spec, const Tensor& weights,
                   Tensor* s, Stream& stream) {
  constexpr const char* kOp = "Ef21DecodeSum";
  const Device dev = messages.device();
  CheckStream(stream, dev, kOp);
  CheckSpec(spec, kOp);
  CheckDType(messages, DType::kU8, kOp, "messages");
  CheckRank(messages, 2, kOp, "messages");
  MF_CHECK(s != nullptr) << kOp << ": s is null";
  CheckOn(*s, dev, kOp, "s");
  CheckDType(*s, DType::kF32, kOp, "s");
  const int64_t members = messages.dim(0), n = s->numel();
  const Layout L = MakeLayout(spec, n, 1);
  CheckShape(messages, {members, L.bytes}, kOp, "messages");
  MF_CHECK(members < (int64_t{1} << 31)) << kOp << ": " << members << " members";
  const float* pw = nullptr;
  if (weights.defined() && weights.numel() > 0) {
    CheckIn(weights, dev, DType::kF32, {members}, kOp, "weights");
    pw = weights.data<float>();
  }
  if (n == 0) return;
  const uint8_t* in = messages.data<uint8_t>();
  float* ps = s->data<float>();
  const int m = static_cast<int>(members);
  const cudaStream_t st = Native(stream);
  const int grid = DeviceGrid(n, kMaxThreads, kMaxThreads, stream);
  switch (spec.kind) {
    case CompressorKind::kIdentity:
      DecodeSumKernel<CompressorKind::kIdentity><<<grid, kMaxThreads, 0, st>>>(in, m, pw, L, ps);
      break;
    case CompressorKind::kInt8:
      DecodeSumKernel<CompressorKind::kInt8><<<grid, kMaxThreads, 0, st>>>(in, m, pw, L, ps);
      break;
    case CompressorKind::kFp8:
      DecodeSumKernel<CompressorKind::kFp8><<<grid, kMaxThreads, 0, st>>>(in, m, pw, L, ps);
      break;
    case CompressorKind::kTopK: {
      Tensor sum = Scratch({n}, DType::kF32, stream);
      const int threads = BlockThreads(spec.block);
      TopKDecodeSumKernel<<<DeviceGrid(L.blocks, 1, threads, stream), threads, 0, st>>>(
          in, m, pw, L, sum.data<float>(), ps);
      break;
    }
  }
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
