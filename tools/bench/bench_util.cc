// Implementation of the benchmark helpers.
#include "tools/bench/bench_util.h"

#include <algorithm>
#include <vector>

#include "core/philox.h"

namespace moefold::bench {

double MedianMs(const std::function<void()>& fn, const Stream& stream, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  stream.Synchronize();
  absl::StatusOr<Event> start = Event::Create(stream.device(), /*timing=*/true);
  absl::StatusOr<Event> end = Event::Create(stream.device(), /*timing=*/true);
  MF_CHECK(start.ok() && end.ok()) << "event creation failed";
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    MF_CHECK(start->Record(stream).ok());
    fn();
    MF_CHECK(end->Record(stream).ok());
    MF_CHECK(end->Synchronize().ok());
    absl::StatusOr<float> elapsed = Event::ElapsedMs(*start, *end);
    MF_CHECK(elapsed.ok()) << elapsed.status();
    ms.push_back(*elapsed);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Tensor RandomGpu(const Shape& shape, DType dtype, float stddev, uint64_t seed) {
  constexpr int64_t kBlock = int64_t{1} << 20;
  Tensor out = Tensor::Empty(shape, dtype, Device::Cuda(0));
  const int64_t n = out.numel();
  const int64_t block = std::min(n, kBlock);
  if (block == 0) return out;
  Tensor host = Tensor::Empty({block}, DType::kF32);
  PhiloxStream rng(seed, 0);
  for (int64_t i = 0; i < block; ++i) host.data<float>()[i] = stddev * rng.Normal();
  const Tensor typed = host.To(dtype).To(Device::Cuda(0));
  Tensor flat = out.Reshape({n});
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t len = std::min(block, n - begin);
    Tensor dst = flat.Slice(begin, begin + len);
    dst.CopyFrom(typed.Slice(0, len));
  }
  return out;
}

}  // namespace moefold::bench
