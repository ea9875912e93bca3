// Counter-based Philox4x32-10 RNG (the generator behind curand's Philox).
// A draw is a pure function of (seed, subsequence, offset), so the CPU and a CUDA kernel that includes
// this header produce identical numbers, and any stream can be resumed from its offset alone.
//
//   PhiloxStream rng(seed, /*subsequence=*/param_index);
//   float x = rng.Normal();   // advances the offset
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MF_HOST_DEVICE __host__ __device__
#else
#define MF_HOST_DEVICE
#endif

namespace moefold {

using PhiloxBlock = std::array<uint32_t, 4>;

// One Philox4x32-10 block: counter = (offset_lo, offset_hi, subsequence_lo, subsequence_hi),
// key = (seed_lo, seed_hi). Known-answer vectors from the Random123 distribution are in the tests.
MF_HOST_DEVICE inline PhiloxBlock Philox4x32(PhiloxBlock counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * counter[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * counter[2];
    counter = {static_cast<uint32_t>(p1 >> 32) ^ counter[1] ^ key0, static_cast<uint32_t>(p1),
               static_cast<uint32_t>(p0 >> 32) ^ counter[3] ^ key1, static_cast<uint32_t>(p0)};
    key0 += kW0;
    key1 += kW1;
  }
  return counter;
}

// Uniform in (0, 1]: (u + 0.5) / 2^32, never 0 so log() is safe in Box-Muller.
MF_HOST_DEVICE inline float PhiloxUniform(uint32_t u) {
  return (static_cast<float>(u) + 0.5f) * 2.3283064365386963e-10f;
}

// A sequential reader over one (seed, subsequence) stream; offset counts 32-bit outputs.
class PhiloxStream {
 public:
  MF_HOST_DEVICE PhiloxStream(uint64_t seed, uint64_t subsequence, uint64_t offset = 0)
      : seed_(seed), subsequence_(subsequence), offset_(offset) {}

  MF_HOST_DEVICE uint32_t NextU32() {
    // One Philox block gives four outputs: computed once, then read in turn.
    const uint64_t block = offset_ / 4;
    if (block != block_index_) {
      block_ = Philox4x32(
          {static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
           static_cast<uint32_t>(subsequence_), static_cast<uint32_t>(subsequence_ >> 32)},
          static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32));
      block_index_ = block;
    }
    return block_[offset_++ % 4];
  }
  MF_HOST_DEVICE float Uniform() { return PhiloxUniform(NextU32()); }
  // Standard normal by Box-Muller on two consecutive outputs (the cosine branch only, so each call
  // consumes exactly two outputs and offsets stay easy to reason about).
  MF_HOST_DEVICE float Normal() {
    const float u1 = Uniform();
    const float u2 = Uniform();
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
  }
  MF_HOST_DEVICE uint64_t offset() const { return offset_; }

 private:
  uint64_t seed_;
  uint64_t subsequence_;
  uint64_t offset_;
  PhiloxBlock block_{};
  uint64_t block_index_ = ~uint64_t{0};  // no block computed yet
};

}  // namespace moefold
