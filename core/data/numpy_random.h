// NumPy's legacy RandomState (MT19937) as far as Megatron-LM's dataset indices use it: seeding with
// an int and shuffling a 1-D array. Invariant: for the same seed and the same sequence of calls,
// the results equal numpy.random.RandomState(seed)'s bit for bit.
//
//   NumpyRandomState rng(1234);                 // numpy.random.RandomState(1234)
//   std::vector<int64_t> order = {0, 1, 2, 3};
//   rng.Shuffle(absl::MakeSpan(order));         // rng.shuffle(order)
#pragma once

#include <cstdint>
#include <random>

#include "absl/types/span.h"

namespace moefold::data {

class NumpyRandomState {
 public:
  // RandomState(seed) with an int seed is MT19937 init_genrand(seed) (numpy mt19937_seed), which is
  // exactly std::mt19937(seed). NumPy accepts 0 ≤ seed < 2^32; callers check the range.
  explicit NumpyRandomState(uint32_t seed) : mt_(seed) {}

  uint32_t NextUint32() { return static_cast<uint32_t>(mt_()); }
  // numpy mt19937_next64: the first 32-bit draw is the high half.
  uint64_t NextUint64();

  // numpy random_interval(max): uniform in [0, max] by masked rejection. mask = smallest 2^b − 1 ≥
  // max; draws (next & mask) until ≤ max, with 32-bit draws when max ≤ 0xffffffff, else 64-bit
  // draws.
  uint64_t RandomInterval(uint64_t max);

  // RandomState.shuffle of a 1-D array (Fisher–Yates from the back):
  //   for i in n−1 … 1: j = RandomInterval(i); swap(x[i], x[j]).
  // Only n matters for the draws, so the element type does not change the permutation.
  void Shuffle(absl::Span<int32_t> x);
  void Shuffle(absl::Span<int64_t> x);

 private:
  std::mt19937 mt_;
};

}  // namespace moefold::data
