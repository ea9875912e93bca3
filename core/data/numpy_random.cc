// NumpyRandomState: NumPy's random_interval and legacy RandomState.shuffle, restated
// (docs/FORMULAS.md §12).
#include "core/data/numpy_random.h"

#include <utility>

namespace moefold::data {
namespace {

template <typename T>
void ShuffleImpl(NumpyRandomState* rng, absl::Span<T> x) {
  for (int64_t i = static_cast<int64_t>(x.size()) - 1; i >= 1; --i) {
    const uint64_t j = rng->RandomInterval(static_cast<uint64_t>(i));
    std::swap(x[i], x[j]);
  }
}

}  // namespace

uint64_t NumpyRandomState::NextUint64() {
  const uint64_t high = NextUint32();
  const uint64_t low = NextUint32();
  return (high << 32) | low;
}

uint64_t NumpyRandomState::RandomInterval(uint64_t max) {
  if (max == 0) return 0;
  uint64_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  mask |= mask >> 32;
  uint64_t value;
  if (max <= 0xffffffffULL) {
    do {
      value = NextUint32() & mask;
    } while (value > max);
  } else {
    do {
      value = NextUint64() & mask;
    } while (value > max);
  }
  return value;
}

void NumpyRandomState::Shuffle(absl::Span<int32_t> x) { ShuffleImpl(this, x); }
void NumpyRandomState::Shuffle(absl::Span<int64_t> x) { ShuffleImpl(this, x); }

}  // namespace moefold::data
