// Streams and events order work on a device. On the CPU work is synchronous, so a CPU Stream is a
// token that keeps op signatures identical across backends (ops take `Stream&` last).
#pragma once

#include "core/device.h"

namespace moefold {

class Stream {
 public:
  explicit Stream(const Device& device = Device::Cpu(), void* native = nullptr)
      : device_(device), native_(native) {}
  const Device& device() const { return device_; }
  void* native() const { return native_; }  // cudaStream_t on CUDA, nullptr on CPU
  void Synchronize();                        // no-op on CPU

 private:
  Device device_;
  void* native_;
};

// The CPU stream every host op may use.
Stream& CpuStream();

}  // namespace moefold
