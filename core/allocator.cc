// Aligned host allocation with byte accounting.
#include "core/allocator.h"

#include <cstdlib>

#include "core/cuda_runtime.h"
#include "core/status.h"

namespace moefold {

void* CpuAllocator::Allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* ptr = std::aligned_alloc(kAlignment, rounded);
  MF_CHECK(ptr != nullptr) << "host allocation of " << bytes << " bytes failed";
  const size_t now = current_.fetch_add(bytes) + bytes;
  size_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  return ptr;
}

void CpuAllocator::Free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  std::free(ptr);
  current_.fetch_sub(bytes);
}

CpuAllocator& CpuMemory() {
  static CpuAllocator* allocator = new CpuAllocator();  // never destroyed: tensors may outlive main
  return *allocator;
}

Allocator& AllocatorFor(const Device& device) {
  if (device.is_cpu()) return CpuMemory();
  MF_CHECK(cuda::BackendBuilt())
      << "cannot allocate on " << device.ToString()
      << ": moefold was built without the CUDA backend (-DMOEFOLD_CUDA=OFF or no nvcc)";
  Allocator* allocator = cuda::DeviceAllocator(device.index);
  MF_CHECK(allocator != nullptr) << "no allocator for " << device.ToString();
  return *allocator;
}

Allocator& PinnedMemory() {
  // Page-locking needs a driver: a CUDA build on a machine without a GPU uses ordinary memory.
  static Allocator* pinned =
      cuda::DeviceCount() > 0 ? cuda::PinnedHostAllocator() : nullptr;
  return pinned != nullptr ? *pinned : CpuMemory();
}

}  // namespace moefold
