// Memory for tensors. The CPU allocator hands out 64-byte aligned blocks and counts bytes (current and
// peak) so tests and metrics can see what a step holds. GPU memory and the pinned host pool are
// caching allocators (core/caching_allocator.h) behind the same interface.
#pragma once

#include <atomic>
#include <cstddef>
#include <span>

#include "core/device.h"

namespace moefold {

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns nullptr only for bytes == 0; failure to allocate aborts via MF_CHECK (see TryAllocate).
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr, size_t bytes) = 0;
  // Frees `ptr` once the work enqueued so far on each of `streams` (cudaStream_t) has completed.
  // Host memory that no stream touches is freed at once.
  virtual void FreeAfter(void* ptr, size_t bytes, std::span<void* const> /*streams*/) {
    Free(ptr, bytes);
  }
  virtual Device device() const = 0;
  virtual size_t current_bytes() const = 0;
  virtual size_t peak_bytes() const = 0;
  virtual void ResetPeak() = 0;
};

class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;
  void* Allocate(size_t bytes) override;
  void Free(void* ptr, size_t bytes) override;
  Device device() const override { return Device::Cpu(); }
  size_t current_bytes() const override { return current_.load(); }
  size_t peak_bytes() const override { return peak_.load(); }
  void ResetPeak() override { peak_.store(current_.load()); }

 private:
  std::atomic<size_t> current_{0};
  std::atomic<size_t> peak_{0};
};

// The process-wide allocator for a device: CpuMemory() or the caching allocator of cuda:N (aborts
// with a clear message when the CUDA backend is not built or the GPU does not exist).
Allocator& AllocatorFor(const Device& device);
CpuAllocator& CpuMemory();
// Page-locked host memory for asynchronous copies (a caching pool); without the CUDA backend, the
// ordinary CPU allocator.
Allocator& PinnedMemory();

}  // namespace moefold
