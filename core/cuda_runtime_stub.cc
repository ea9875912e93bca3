// The CUDA runtime API of core/ in a build without the backend: there is no device, so every
// call that would need one fails with FailedPrecondition naming the missing backend.
#include "absl/strings/str_cat.h"
#include "core/cuda_runtime.h"
#include "core/status.h"

namespace moefold::cuda {
namespace {

absl::Status NotBuilt(const char* what) {
  return absl::FailedPreconditionError(absl::StrCat(
      what, ": moefold was built without the CUDA backend (-DMOEFOLD_CUDA=OFF or no nvcc)"));
}

}  // namespace

bool BackendBuilt() { return false; }
int DeviceCount() { return 0; }
int64_t HostWaits() { return 0; }
void CountHostWait() {}
absl::StatusOr<DeviceInfo> GetDeviceInfo(int) { return NotBuilt("GetDeviceInfo"); }
absl::Status SetDevice(int) { return NotBuilt("SetDevice"); }
absl::StatusOr<int> CurrentDevice() { return NotBuilt("CurrentDevice"); }
absl::StatusOr<void*> StreamCreate(int) { return NotBuilt("StreamCreate"); }
void StreamDestroy(void*) {}
absl::Status StreamSynchronize(void*) { return NotBuilt("StreamSynchronize"); }
absl::Status StreamWaitEvent(void*, void*) { return NotBuilt("StreamWaitEvent"); }
absl::StatusOr<void*> EventCreate(int, bool) { return NotBuilt("EventCreate"); }
void EventDestroy(void*) {}
absl::Status EventRecord(void*, void*) { return NotBuilt("EventRecord"); }
absl::Status EventSynchronize(void*) { return NotBuilt("EventSynchronize"); }
absl::StatusOr<bool> EventQuery(void*) { return NotBuilt("EventQuery"); }
absl::StatusOr<float> EventElapsedMs(void*, void*) { return NotBuilt("EventElapsedMs"); }
void* DefaultStream(int) {
  const absl::Status s = NotBuilt("DefaultStream");
  MF_CHECK(s.ok()) << s.message();
  return nullptr;
}
Allocator* DeviceAllocator(int) { return nullptr; }
Allocator* PinnedHostAllocator() { return nullptr; }
absl::Status Memcpy(void*, const void*, size_t, void*, bool) { return NotBuilt("Memcpy"); }
absl::Status Memset(void*, int, size_t, void*) { return NotBuilt("Memset"); }
absl::Status Convert(const void*, DType, void*, DType, size_t, void*) {
  return NotBuilt("Convert");
}

}  // namespace moefold::cuda
