// Streams and events order work on a device. On the CPU work is synchronous, so a CPU Stream is a
// token that keeps op signatures identical across backends (ops take `Stream&` last); a CUDA
// Stream wraps a cudaStream_t (owned when made by Create, borrowed when wrapped).
//
//   MF_ASSIGN_OR_RETURN(Stream comm, Stream::Create(Device::Cuda(0)));
//   MF_ASSIGN_OR_RETURN(Event done, Event::Create(comm.device()));
//   MF_RETURN_IF_ERROR(done.Record(DefaultStream(comm.device())));
//   MF_RETURN_IF_ERROR(comm.Wait(done));   // comm's later work runs after the compute so far
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "core/device.h"

namespace moefold {

class Event;

class Stream {
 public:
  // Wraps `native` (a cudaStream_t for a CUDA device; nullptr = the legacy default stream) without
  // owning it.
  explicit Stream(const Device& device = Device::Cpu(), void* native = nullptr)
      : device_(device), native_(native) {}
  // A new stream of `device` (non-blocking; destroyed with the last copy of this Stream). CPU:
  // the CPU token. FailedPrecondition without the CUDA backend or the device.
  static absl::StatusOr<Stream> Create(const Device& device);

  const Device& device() const { return device_; }
  void* native() const { return native_; }  // cudaStream_t on CUDA, nullptr on CPU
  // Waits for the work enqueued so far (no-op on CPU); a CUDA failure aborts with its message.
  void Synchronize() const;
  // The work enqueued on this stream after the call waits for `event` (no-op on CPU).
  absl::Status Wait(const Event& event) const;

 private:
  Device device_;
  void* native_;
  std::shared_ptr<void> owner_;  // set for streams made by Create
};

// The CPU stream every host op may use.
Stream& CpuStream();
// The default stream of a device: CpuStream() for the CPU; for cuda:N one stream created on first
// use and kept for the process. Tensor-level helpers without a stream argument (CopyFrom,
// SetZero, ToVector, ...) run there and return when done.
Stream& DefaultStream(const Device& device);

// A marker in a stream's work: record it, then wait for it from the host or from another stream.
// CPU events complete when recorded and time with the host clock.
class Event {
 public:
  static absl::StatusOr<Event> Create(const Device& device, bool timing = false);
  absl::Status Record(const Stream& stream);
  absl::Status Synchronize() const;
  absl::StatusOr<bool> Query() const;  // true when the recorded work completed
  const Device& device() const;
  void* native() const;  // cudaEvent_t on CUDA, nullptr on CPU
  // Milliseconds from `start` to `end`, both recorded (and created with timing = true on CUDA).
  static absl::StatusOr<float> ElapsedMs(const Event& start, const Event& end);

 private:
  Event() = default;
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace moefold
