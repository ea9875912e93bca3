// Helpers of the op benchmark: event-timed medians and random (never zero) device tensors.
#pragma once

#include <functional>
#include <string>

#include "core/stream.h"
#include "core/tensor.h"
#include "tools/bench/bench_line.h"

namespace moefold::bench {

// Median milliseconds of `fn` over `reps` runs after `warmup` runs, each timed with a pair of
// device events on `stream` (the host waits per run so every figure is one launch sequence).
double MedianMs(const std::function<void()>& fn, const Stream& stream, int warmup = 3,
                int reps = 20);

// A GPU tensor of `dtype` with N(0, stddev²) entries (a 1 Mi-element random block, repeated).
Tensor RandomGpu(const Shape& shape, DType dtype, float stddev = 1.0f, uint64_t seed = 1);

}  // namespace moefold::bench
