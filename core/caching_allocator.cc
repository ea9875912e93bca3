// Block cache over a raw memory source: best fit among cached blocks within 1/8 of the rounded
// request (no splitting), deferred frees polled through events, cache emptied and retried once
// before an allocation fails.
#include "core/caching_allocator.h"

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace moefold {

CachingAllocator::CachingAllocator(std::unique_ptr<RawMemory> raw) : raw_(std::move(raw)) {
  MF_CHECK(raw_ != nullptr);
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mutex_);
  PollPendingLocked(/*wait=*/true);
  ReleaseCachedLocked();
}

size_t CachingAllocator::RoundSize(size_t bytes) {
  const size_t round = bytes <= kSmallLimit ? kSmallRound : kLargeRound;
  return (bytes + round - 1) / round * round;
}

void* CachingAllocator::Allocate(size_t bytes) {
  absl::StatusOr<void*> ptr = TryAllocate(bytes);
  MF_CHECK(ptr.ok()) << ptr.status();
  return *ptr;
}

absl::StatusOr<void*> CachingAllocator::TryAllocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t rounded = RoundSize(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  PollPendingLocked(/*wait=*/false);
  size_t block = 0;
  void* ptr = AllocateLocked(rounded, &block);
  if (ptr == nullptr) {
    // Out of memory: wait for deferred frees, give the whole cache back and try once more.
    PollPendingLocked(/*wait=*/true);
    ReleaseCachedLocked();
    ptr = AllocateLocked(rounded, &block);
  }
  if (ptr == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "allocation of ", bytes, " bytes from ", raw_->name(), " failed (", current_,
        " bytes in use, ", reserved_, " reserved, peak ", peak_, ")"));
  }
  live_[ptr] = Live{block, bytes};
  current_ += bytes;
  if (current_ > peak_) peak_ = current_;
  return ptr;
}

void* CachingAllocator::AllocateLocked(size_t rounded, size_t* block) {
  auto it = free_.lower_bound(rounded);
  if (it != free_.end() && it->first <= rounded + rounded / 8) {
    void* ptr = it->second;
    *block = it->first;
    free_.erase(it);
    return ptr;
  }
  void* ptr = raw_->Allocate(rounded);
  if (ptr == nullptr) return nullptr;
  ++raw_allocations_;
  reserved_ += rounded;
  *block = rounded;
  return ptr;
}

void CachingAllocator::Free(void* ptr, size_t /*bytes*/) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  MF_CHECK(it != live_.end()) << "free of a pointer " << raw_->name() << " never handed out";
  current_ -= it->second.requested;
  free_.emplace(it->second.size, ptr);
  live_.erase(it);
}

void CachingAllocator::FreeAfter(void* ptr, size_t bytes, std::span<void* const> streams) {
  if (ptr == nullptr) return;
  if (streams.empty()) return Free(ptr, bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(ptr);
  MF_CHECK(it != live_.end()) << "free of a pointer " << raw_->name() << " never handed out";
  Pending pending{ptr, it->second.size, {}};
  for (void* stream : streams) pending.events.push_back(raw_->RecordEvent(stream));
  current_ -= it->second.requested;
  live_.erase(it);
  pending_.push_back(std::move(pending));
}

void CachingAllocator::PollPendingLocked(bool wait) {
  if (pending_.empty()) return;
  if (wait) raw_->Synchronize();
  std::vector<Pending> still;
  for (Pending& p : pending_) {
    bool done = true;
    for (void* event : p.events) done = done && raw_->EventDone(event);
    if (!done) {
      still.push_back(std::move(p));
      continue;
    }
    for (void* event : p.events) raw_->DestroyEvent(event);
    free_.emplace(p.size, p.ptr);
  }
  pending_ = std::move(still);
}

void CachingAllocator::ReleaseCachedLocked() {
  if (free_.empty()) return;
  raw_->Synchronize();  // a cached block may still be read by work enqueued before its free
  for (auto& [size, ptr] : free_) ReleaseBlockLocked(ptr, size);
  free_.clear();
}

void CachingAllocator::ReleaseBlockLocked(void* ptr, size_t size) {
  raw_->Free(ptr);
  reserved_ -= size;
}

void CachingAllocator::EmptyCache() {
  std::lock_guard<std::mutex> lock(mutex_);
  PollPendingLocked(/*wait=*/true);
  ReleaseCachedLocked();
}

size_t CachingAllocator::current_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

size_t CachingAllocator::peak_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_;
}

void CachingAllocator::ResetPeak() {
  std::lock_guard<std::mutex> lock(mutex_);
  peak_ = current_;
}

size_t CachingAllocator::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reserved_;
}

int64_t CachingAllocator::raw_allocations() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return raw_allocations_;
}

}  // namespace moefold
