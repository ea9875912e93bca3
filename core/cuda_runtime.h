// The CUDA runtime as core/ sees it: devices, streams, events, copies and the memory pools, behind
// opaque handles (void* = cudaStream_t / cudaEvent_t) so no public header includes CUDA. Builds
// without the backend link core/cuda_runtime_stub.cc: no device, and every call that needs one
// returns FailedPrecondition (or aborts where the API cannot return a Status).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"

namespace moefold::cuda {

bool BackendBuilt();  // true when moefold was compiled with the CUDA backend
int DeviceCount();    // visible GPUs; 0 without the backend, a driver or a GPU (never an error)

// Times the host has waited for a device since the process started: stream and event
// synchronisations, synchronous copies and device-wide synchronisations (the caching allocator
// emptying its cache), also those inside ops that return a host value. Tests use it to check that
// a training step waits only where it must; 0 without the backend.
int64_t HostWaits();
// Counts one host wait (for code that synchronises through the CUDA API directly).
void CountHostWait();

// What a run reports about its GPU (run.json) and the MFU peak table keys on (the name).
struct DeviceInfo {
  std::string name;          // "NVIDIA H100 80GB HBM3"
  int64_t memory_bytes = 0;
  int sm_major = 0, sm_minor = 0;
  int driver_version = 0;    // cudaDriverGetVersion: 13000 = CUDA 13.0
  int runtime_version = 0;   // cudaRuntimeGetVersion
};
absl::StatusOr<DeviceInfo> GetDeviceInfo(int device);

absl::Status SetDevice(int device);
absl::StatusOr<int> CurrentDevice();

// Streams (non-blocking with respect to the legacy default stream) and events.
absl::StatusOr<void*> StreamCreate(int device);
void StreamDestroy(void* stream);
absl::Status StreamSynchronize(void* stream);
absl::Status StreamWaitEvent(void* stream, void* event);
absl::StatusOr<void*> EventCreate(int device, bool timing);
void EventDestroy(void* event);
absl::Status EventRecord(void* event, void* stream);
absl::Status EventSynchronize(void* event);
absl::StatusOr<bool> EventQuery(void* event);  // true once the recorded work completed
absl::StatusOr<float> EventElapsedMs(void* start, void* end);

// The device's default compute stream: created on first use and kept for the process.
void* DefaultStream(int device);

// The caching allocator of `device` and the pinned host pool (nullptr without the backend).
Allocator* DeviceAllocator(int device);
Allocator* PinnedHostAllocator();

// Copies `bytes` between any two of host, pinned host and device memory (cudaMemcpyDefault);
// with `synchronous` the call returns after the copy completed.
absl::Status Memcpy(void* dst, const void* src, size_t bytes, void* stream, bool synchronous);
absl::Status Memset(void* dst, int value, size_t bytes, void* stream);
// dst[i] = convert(src[i]) on the device for any pair of dtypes, with dtype.h's rounding (RNE,
// saturating fp8, truncating integer casts).
absl::Status Convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, size_t n,
                     void* stream);

}  // namespace moefold::cuda
