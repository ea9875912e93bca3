// Streams and events: the CPU token (work already happened when an op returned) and CUDA streams
// and events through core/cuda_runtime.h.
#include "core/stream.h"

#include <array>
#include <chrono>
#include <mutex>

#include "core/cuda_runtime.h"
#include "core/status.h"

namespace moefold {

absl::StatusOr<Stream> Stream::Create(const Device& device) {
  if (device.is_cpu()) return Stream(device);
  absl::StatusOr<void*> native = cuda::StreamCreate(device.index);
  if (!native.ok()) return native.status();
  Stream stream(device, *native);
  stream.owner_ = std::shared_ptr<void>(*native, [](void* s) { cuda::StreamDestroy(s); });
  return stream;
}

void Stream::Synchronize() const {
  if (device_.is_cpu()) return;
  const absl::Status s = cuda::StreamSynchronize(native_);
  MF_CHECK(s.ok()) << "synchronising a stream of " << device_.ToString() << ": " << s.message();
}

absl::Status Stream::Wait(const Event& event) const {
  if (device_.is_cpu()) return absl::OkStatus();
  if (event.device().is_cpu()) return absl::OkStatus();  // a CPU event completed when recorded
  return cuda::StreamWaitEvent(native_, event.native());
}

Stream& CpuStream() {
  static Stream* stream = new Stream(Device::Cpu());
  return *stream;
}

Stream& DefaultStream(const Device& device) {
  if (device.is_cpu()) return CpuStream();
  constexpr int kMaxDevices = 64;
  static std::mutex* mutex = new std::mutex();
  static std::array<Stream*, kMaxDevices>* streams = new std::array<Stream*, kMaxDevices>{};
  MF_CHECK(device.index >= 0 && device.index < kMaxDevices) << device.ToString();
  std::lock_guard<std::mutex> lock(*mutex);
  Stream*& stream = (*streams)[device.index];
  if (stream == nullptr) stream = new Stream(device, cuda::DefaultStream(device.index));
  return *stream;
}

struct Event::State {
  Device device;
  void* native = nullptr;
  bool timing = false;
  std::chrono::steady_clock::time_point host_time{};  // CPU events
  ~State() { cuda::EventDestroy(native); }
};

absl::StatusOr<Event> Event::Create(const Device& device, bool timing) {
  auto state = std::make_shared<State>();
  state->device = device;
  state->timing = timing;
  if (device.is_cuda()) {
    absl::StatusOr<void*> native = cuda::EventCreate(device.index, timing);
    if (!native.ok()) return native.status();
    state->native = *native;
  }
  Event event;
  event.state_ = std::move(state);
  return event;
}

absl::Status Event::Record(const Stream& stream) {
  MF_CHECK(stream.device() == state_->device)
      << "recording an event of " << state_->device.ToString() << " on a stream of "
      << stream.device().ToString();
  if (state_->device.is_cpu()) {
    state_->host_time = std::chrono::steady_clock::now();
    return absl::OkStatus();
  }
  return cuda::EventRecord(state_->native, stream.native());
}

absl::Status Event::Synchronize() const {
  if (state_->device.is_cpu()) return absl::OkStatus();
  return cuda::EventSynchronize(state_->native);
}

absl::StatusOr<bool> Event::Query() const {
  if (state_->device.is_cpu()) return true;
  return cuda::EventQuery(state_->native);
}

const Device& Event::device() const { return state_->device; }

void* Event::native() const { return state_->native; }

absl::StatusOr<float> Event::ElapsedMs(const Event& start, const Event& end) {
  MF_CHECK(start.device() == end.device()) << "events of different devices";
  if (start.device().is_cpu()) {
    return std::chrono::duration<float, std::milli>(end.state_->host_time -
                                                    start.state_->host_time)
        .count();
  }
  return cuda::EventElapsedMs(start.state_->native, end.state_->native);
}

}  // namespace moefold
