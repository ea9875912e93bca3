// Tests of the caching allocator over a fake raw source (runs everywhere): reuse after warm-up,
// byte accounting, deferred frees behind events, and the empty-cache retry on exhaustion.
#include "core/caching_allocator.h"

#include <cstdlib>
#include <memory>
#include <set>
#include <unordered_map>
#include <vector>

#include "gtest/gtest.h"

namespace moefold {
namespace {

// Host memory with a capacity, counting calls; events complete when the test says so.
class FakeMemory final : public RawMemory {
 public:
  struct Counters {
    int allocations = 0, frees = 0, syncs = 0;
    size_t in_use = 0;
    size_t capacity = size_t{1} << 30;
    std::set<int*> pending_events;
  };
  explicit FakeMemory(Counters* counters) : c_(counters) {}
  void* Allocate(size_t bytes) override {
    if (c_->in_use + bytes > c_->capacity) return nullptr;
    ++c_->allocations;
    c_->in_use += bytes;
    void* ptr = std::malloc(bytes);
    sizes_[ptr] = bytes;
    return ptr;
  }
  void Free(void* ptr) override {
    ++c_->frees;
    c_->in_use -= sizes_.at(ptr);
    sizes_.erase(ptr);
    std::free(ptr);
  }
  void* RecordEvent(void*) override {
    int* event = new int(0);
    c_->pending_events.insert(event);
    return event;
  }
  bool EventDone(void* event) override {
    return c_->pending_events.count(static_cast<int*>(event)) == 0;
  }
  void DestroyEvent(void* event) override { delete static_cast<int*>(event); }
  void Synchronize() override {
    ++c_->syncs;
    c_->pending_events.clear();
  }
  Device device() const override { return Device::Cuda(0); }
  std::string name() const override { return "fake memory"; }

 private:
  Counters* c_;
  std::unordered_map<void*, size_t> sizes_;
};

TEST(CachingAllocatorTest, RepeatingStepStopsCallingTheRawSource) {
  FakeMemory::Counters c;
  CachingAllocator cache(std::make_unique<FakeMemory>(&c));
  const std::vector<size_t> step = {100, 4096, 3 << 20, 7000, 100, (5 << 20) + 1};
  for (int i = 0; i < 5; ++i) {
    std::vector<void*> live;
    for (size_t bytes : step) live.push_back(cache.Allocate(bytes));
    for (size_t j = 0; j < live.size(); ++j) cache.Free(live[j], step[j]);
    if (i == 0) {
      EXPECT_EQ(c.allocations, static_cast<int>(step.size()));
    }
  }
  EXPECT_EQ(c.allocations, static_cast<int>(step.size())) << "no raw allocation after warm-up";
  EXPECT_EQ(cache.raw_allocations(), static_cast<int64_t>(step.size()));
  EXPECT_EQ(cache.current_bytes(), 0u);
}

TEST(CachingAllocatorTest, CountsCurrentAndPeakRequestedBytes) {
  FakeMemory::Counters c;
  CachingAllocator cache(std::make_unique<FakeMemory>(&c));
  void* a = cache.Allocate(1000);
  void* b = cache.Allocate(3000);
  EXPECT_EQ(cache.current_bytes(), 4000u);
  EXPECT_EQ(cache.peak_bytes(), 4000u);
  EXPECT_EQ(cache.reserved_bytes(), 1024u + 3072u);
  cache.Free(a, 1000);
  EXPECT_EQ(cache.current_bytes(), 3000u);
  EXPECT_EQ(cache.peak_bytes(), 4000u);
  cache.ResetPeak();
  EXPECT_EQ(cache.peak_bytes(), 3000u);
  cache.Free(b, 3000);
  EXPECT_EQ(cache.Allocate(0), nullptr);
}

TEST(CachingAllocatorTest, ReusesOnlyCloseSizesAndRoundsLargeBlocks) {
  EXPECT_EQ(CachingAllocator::RoundSize(1), 512u);
  EXPECT_EQ(CachingAllocator::RoundSize(513), 1024u);
  EXPECT_EQ(CachingAllocator::RoundSize((1 << 20) + 1), size_t{2} << 20);
  FakeMemory::Counters c;
  CachingAllocator cache(std::make_unique<FakeMemory>(&c));
  void* big = cache.Allocate(64 << 20);
  cache.Free(big, 64 << 20);
  void* small = cache.Allocate(1 << 20);  // far smaller: must not take the 64 MiB block
  EXPECT_NE(small, big);
  EXPECT_EQ(c.allocations, 2);
  void* again = cache.Allocate((64 << 20) - 4096);  // within 1/8: reuses it
  EXPECT_EQ(again, big);
  cache.Free(small, 1 << 20);
  cache.Free(again, (64 << 20) - 4096);
}

TEST(CachingAllocatorTest, DeferredFreeWaitsForItsEvent) {
  FakeMemory::Counters c;
  CachingAllocator cache(std::make_unique<FakeMemory>(&c));
  void* stream = reinterpret_cast<void*>(0x1);
  void* a = cache.Allocate(4096);
  void* const streams[] = {stream};
  cache.FreeAfter(a, 4096, streams);
  EXPECT_EQ(cache.current_bytes(), 0u);
  void* b = cache.Allocate(4096);
  EXPECT_NE(a, b) << "the block is still in use by the stream";
  for (int* e : std::vector<int*>(c.pending_events.begin(), c.pending_events.end())) {
    c.pending_events.erase(e);  // the stream's work completes
  }
  void* d = cache.Allocate(4096);
  EXPECT_EQ(d, a);
  cache.Free(b, 4096);
  cache.Free(d, 4096);
}

TEST(CachingAllocatorTest, EmptiesTheCacheBeforeFailingAndNamesTheSource) {
  FakeMemory::Counters c;
  c.capacity = 8 << 20;
  CachingAllocator cache(std::make_unique<FakeMemory>(&c));
  void* a = cache.Allocate(6 << 20);
  cache.Free(a, 6 << 20);  // cached, holding 6 MiB of the 8
  void* b = cache.Allocate(4 << 20);  // needs the cache released first
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(c.frees, 1);
  absl::StatusOr<void*> too_big = cache.TryAllocate(16 << 20);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(too_big.status().message().find("fake memory"), absl::string_view::npos);
  cache.Free(b, 4 << 20);
  cache.EmptyCache();
  EXPECT_EQ(cache.reserved_bytes(), 0u);
  EXPECT_EQ(c.in_use, 0u);
}

}  // namespace
}  // namespace moefold
