// The CUDA runtime behind core/cuda_runtime.h: streams, events, copies, and the two caching pools
// (device memory per GPU, one pinned host pool), each created on first use and never destroyed,
// like CpuMemory(), because tensors may outlive main.
#include "core/cuda_runtime.h"

#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/caching_allocator.h"
#include "core/gpu_error.h"

namespace moefold::cuda {
namespace {

constexpr int kMaxDevices = 64;

// Makes `device` current for the scope and restores the previous one.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    MF_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) MF_CUDA_CHECK(cudaSetDevice(device));
    device_ = device;
  }
  ~DeviceScope() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0, device_ = 0;
};

void* RecordMarker(void* stream) {
#if CUDART_VERSION >= 12080
  // cudaEventRecord fails when the event and the stream belong to different devices, so the event
  // is created on the stream's device (the pinned pool is shared by every GPU's streams, and a
  // block may be freed while another device is current).
  int stream_device = 0;
  MF_CUDA_CHECK(cudaStreamGetDevice(static_cast<cudaStream_t>(stream), &stream_device));
  DeviceScope scope(stream_device);
#endif
  cudaEvent_t event;
  MF_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  MF_CUDA_CHECK(cudaEventRecord(event, static_cast<cudaStream_t>(stream)));
  return event;
}

bool MarkerDone(void* event) {
  const cudaError_t state = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (state == cudaErrorNotReady) return false;
  MF_CUDA_CHECK(state);
  return true;
}

class DeviceMemory final : public RawMemory {
 public:
  explicit DeviceMemory(int device) : device_(device) {}
  void* Allocate(size_t bytes) override {
    DeviceScope scope(device_);
    void* ptr = nullptr;
    const cudaError_t code = cudaMalloc(&ptr, bytes);
    if (code == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the sticky-free error so the retry starts clean
      return nullptr;
    }
    MF_CUDA_CHECK(code);
    return ptr;
  }
  void Free(void* ptr) override {
    DeviceScope scope(device_);
    MF_CUDA_CHECK(cudaFree(ptr));
  }
  void* RecordEvent(void* stream) override {
    DeviceScope scope(device_);
    return RecordMarker(stream);
  }
  bool EventDone(void* event) override { return MarkerDone(event); }
  void DestroyEvent(void* event) override { cudaEventDestroy(static_cast<cudaEvent_t>(event)); }
  void Synchronize() override {
    DeviceScope scope(device_);
    CountHostWait();
    MF_CUDA_CHECK(cudaDeviceSynchronize());
  }
  Device device() const override { return Device::Cuda(device_); }
  std::string name() const override { return absl::StrCat("CUDA memory of cuda:", device_); }

 private:
  int device_;
};

class PinnedMemory final : public RawMemory {
 public:
  void* Allocate(size_t bytes) override {
    void* ptr = nullptr;
    const cudaError_t code = cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable);
    if (code == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      return nullptr;
    }
    MF_CUDA_CHECK(code);
    return ptr;
  }
  void Free(void* ptr) override { MF_CUDA_CHECK(cudaFreeHost(ptr)); }
  void* RecordEvent(void* stream) override { return RecordMarker(stream); }
  bool EventDone(void* event) override { return MarkerDone(event); }
  void DestroyEvent(void* event) override { cudaEventDestroy(static_cast<cudaEvent_t>(event)); }
  void Synchronize() override {
    CountHostWait();
    MF_CUDA_CHECK(cudaDeviceSynchronize());
  }
  Device device() const override { return Device::Cpu(); }
  std::string name() const override { return "pinned host memory"; }
};

std::mutex& RegistryMutex() {
  static std::mutex* mutex = new std::mutex();
  return *mutex;
}

void CheckDeviceIndex(int device) {
  MF_CHECK(device >= 0 && device < DeviceCount())
      << "cuda:" << device << " does not exist (" << DeviceCount() << " visible GPUs)";
}

}  // namespace

bool BackendBuilt() { return true; }

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // "no GPU" is an answer, not an error
    return 0;
  }
  return count;
}

absl::StatusOr<DeviceInfo> GetDeviceInfo(int device) {
  cudaDeviceProp prop{};
  MF_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.name = prop.name;
  info.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  info.sm_major = prop.major;
  info.sm_minor = prop.minor;
  MF_CUDA_RETURN_IF_ERROR(cudaDriverGetVersion(&info.driver_version));
  MF_CUDA_RETURN_IF_ERROR(cudaRuntimeGetVersion(&info.runtime_version));
  return info;
}

absl::Status SetDevice(int device) {
  MF_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  return absl::OkStatus();
}

absl::StatusOr<int> CurrentDevice() {
  int device = 0;
  MF_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  return device;
}

absl::StatusOr<void*> StreamCreate(int device) {
  DeviceScope scope(device);
  cudaStream_t stream = nullptr;
  MF_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return static_cast<void*>(stream);
}

void StreamDestroy(void* stream) {
  if (stream != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

namespace {
std::atomic<int64_t> host_waits{0};
}  // namespace

int64_t HostWaits() { return host_waits.load(); }
void CountHostWait() { ++host_waits; }

absl::Status StreamSynchronize(void* stream) {
  CountHostWait();
  MF_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
  return absl::OkStatus();
}

absl::Status StreamWaitEvent(void* stream, void* event) {
  MF_CUDA_RETURN_IF_ERROR(
      cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0));
  return absl::OkStatus();
}

absl::StatusOr<void*> EventCreate(int device, bool timing) {
  DeviceScope scope(device);
  cudaEvent_t event = nullptr;
  MF_CUDA_RETURN_IF_ERROR(
      cudaEventCreateWithFlags(&event, timing ? cudaEventDefault : cudaEventDisableTiming));
  return static_cast<void*>(event);
}

void EventDestroy(void* event) {
  if (event != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

absl::Status EventRecord(void* event, void* stream) {
  MF_CUDA_RETURN_IF_ERROR(
      cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
  return absl::OkStatus();
}

absl::Status EventSynchronize(void* event) {
  CountHostWait();
  MF_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  return absl::OkStatus();
}

absl::StatusOr<bool> EventQuery(void* event) {
  const cudaError_t state = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (state == cudaErrorNotReady) return false;
  MF_CUDA_RETURN_IF_ERROR(state);
  return true;
}

absl::StatusOr<float> EventElapsedMs(void* start, void* end) {
  float ms = 0;
  MF_CUDA_RETURN_IF_ERROR(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

void* DefaultStream(int device) {
  static std::array<void*, kMaxDevices>* streams = new std::array<void*, kMaxDevices>{};
  std::lock_guard<std::mutex> lock(RegistryMutex());
  CheckDeviceIndex(device);
  void*& stream = (*streams)[device];
  if (stream == nullptr) {
    absl::StatusOr<void*> created = StreamCreate(device);
    MF_CHECK(created.ok()) << created.status();
    stream = *created;
  }
  return stream;
}

Allocator* DeviceAllocator(int device) {
  static std::array<CachingAllocator*, kMaxDevices>* pools =
      new std::array<CachingAllocator*, kMaxDevices>{};
  std::lock_guard<std::mutex> lock(RegistryMutex());
  CheckDeviceIndex(device);
  CachingAllocator*& pool = (*pools)[device];
  if (pool == nullptr) pool = new CachingAllocator(std::make_unique<DeviceMemory>(device));
  return pool;
}

Allocator* PinnedHostAllocator() {
  static CachingAllocator* pool = new CachingAllocator(std::make_unique<PinnedMemory>());
  return pool;
}

absl::Status Memcpy(void* dst, const void* src, size_t bytes, void* stream, bool synchronous) {
  if (bytes == 0) return absl::OkStatus();
  const auto s = static_cast<cudaStream_t>(stream);
  MF_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
  if (synchronous) {
    CountHostWait();
    MF_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
  }
  return absl::OkStatus();
}

absl::Status Memset(void* dst, int value, size_t bytes, void* stream) {
  if (bytes == 0) return absl::OkStatus();
  MF_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dst, value, bytes, static_cast<cudaStream_t>(stream)));
  return absl::OkStatus();
}

}  // namespace moefold::cuda
