// A caching allocator (docs/ARCHITECTURE.md §2) over a raw memory source (cudaMalloc for GPU
// memory, cudaHostAlloc for the pinned host pool, a fake in tests): freed blocks are kept and
// handed out again, so a step loop with repeating shapes stops calling the raw source after its
// first step.
//
// Stream order: a block freed with Free() may be reused at once; that is safe for work enqueued
// on the device's default stream (and any stream ordered after it). A tensor used on another
// stream is freed with FreeAfter(), which holds the block until an event recorded on each such
// stream has completed (PyTorch's recordStream, in one call).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/allocator.h"

namespace moefold {

// What the cache needs from the memory it caches. Events are opaque markers on a stream.
class RawMemory {
 public:
  virtual ~RawMemory() = default;
  virtual void* Allocate(size_t bytes) = 0;  // nullptr when the source is exhausted
  virtual void Free(void* ptr) = 0;
  virtual void* RecordEvent(void* stream) = 0;  // marks the work enqueued on `stream` so far
  virtual bool EventDone(void* event) = 0;
  virtual void DestroyEvent(void* event) = 0;
  virtual void Synchronize() = 0;  // waits for all work on the device (before memory goes back)
  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "CUDA memory on cuda:0", for messages
};

class CachingAllocator final : public Allocator {
 public:
  static constexpr size_t kSmallLimit = size_t{1} << 20;  // up to 1 MiB: 512-byte granularity
  static constexpr size_t kSmallRound = 512;
  static constexpr size_t kLargeRound = size_t{2} << 20;  // beyond: 2 MiB granularity

  explicit CachingAllocator(std::unique_ptr<RawMemory> raw);
  ~CachingAllocator() override;

  // Aborts with a ResourceExhausted message when even an emptied cache cannot serve `bytes`.
  void* Allocate(size_t bytes) override;
  // ResourceExhausted naming the request, the bytes in use, cached and the peak.
  absl::StatusOr<void*> TryAllocate(size_t bytes);
  void Free(void* ptr, size_t bytes) override;
  void FreeAfter(void* ptr, size_t bytes, std::span<void* const> streams) override;

  Device device() const override { return raw_->device(); }
  size_t current_bytes() const override;  // requested bytes of the live blocks
  size_t peak_bytes() const override;
  void ResetPeak() override;
  size_t reserved_bytes() const;    // bytes held from the raw source (live + cached + pending)
  int64_t raw_allocations() const;  // raw Allocate calls so far (flat after warm-up)

  // Returns every cached block to the raw source (after waiting for the device).
  void EmptyCache();

  static size_t RoundSize(size_t bytes);

 private:
  struct Pending {
    void* ptr;
    size_t size;
    std::vector<void*> events;
  };
  void* AllocateLocked(size_t rounded, size_t* block);
  void ReleaseCachedLocked();
  void PollPendingLocked(bool wait);
  void ReleaseBlockLocked(void* ptr, size_t size);

  std::unique_ptr<RawMemory> raw_;
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // cached blocks by size
  struct Live {
    size_t size;       // block size
    size_t requested;  // what the caller asked for (counted in current_bytes)
  };
  std::unordered_map<void*, Live> live_;
  std::vector<Pending> pending_;
  size_t current_ = 0, peak_ = 0, reserved_ = 0;
  int64_t raw_allocations_ = 0;
};

}  // namespace moefold
