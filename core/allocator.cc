// Aligned host allocation with byte accounting.
#include "core/allocator.h"

#include <cstdlib>

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
  MF_CHECK(device.is_cpu()) << "no allocator registered for " << device.ToString();
  return CpuMemory();
}

}  // namespace moefold
