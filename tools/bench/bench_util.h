// Helpers of the op benchmark: event-timed medians, random (never zero) device tensors, JSON lines.
#pragma once

#include <functional>
#include <string>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::bench {

// Median milliseconds of `fn` over `reps` runs after `warmup` runs, each timed with a pair of
// device events on `stream` (the host waits per run so every figure is one launch sequence).
double MedianMs(const std::function<void()>& fn, const Stream& stream, int warmup = 3,
                int reps = 20);

// A GPU tensor of `dtype` with N(0, stddev²) entries (a 1 Mi-element random block, repeated).
Tensor RandomGpu(const Shape& shape, DType dtype, float stddev = 1.0f, uint64_t seed = 1);

// One JSON object per line: {"bench": name, ...fields}. Fields are preformatted "key": value.
class JsonLine {
 public:
  explicit JsonLine(const std::string& bench);
  JsonLine& Add(const std::string& key, double value);
  JsonLine& Add(const std::string& key, const std::string& value);
  void Print();

 private:
  std::string text_;
};

}  // namespace moefold::bench
