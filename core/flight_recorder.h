// The flight recorder: this process's last N communication calls (op, group, bytes, peer, when
// issued, when seen complete) and where the step loop is (step, phase, micro-batch, layer), so
// that a hang can be explained after the fact: the watchdog (core/train/watchdog.h) writes it to
// RUN_DIR/flight/rank{R}.json every heartbeat and at every abnormal end, and its report names each
// rank's last completed and current operation. TimedCommunicator records every op of every group;
// the trainer and the pipeline executor move the position.
//
//   const int64_t id = FlightRecorder::Get().Issued("all_reduce", "dp", 4096, -1);
//   ... the op runs ...
//   FlightRecorder::Get().Completed(id, /*ok=*/true);
//
// Thread-safe: the step loop's thread records, the watchdog's thread reads. A process-wide
// singleton, like the tracer (core/trace.h): there is one step loop per process.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace moefold {

struct FlightEntry {
  int64_t id = 0;          // 1, 2, ... in issue order
  std::string op;          // "all_reduce", "send", ...
  std::string group;       // the communicator's name ("dp", "ep", "pp", "world", ...)
  int64_t bytes = 0;       // of this rank's buffer
  int peer = -1;           // world rank of a point-to-point op's peer (−1: the whole group)
  double issued_s = 0;     // wall clock (seconds since the epoch)
  double completed_s = 0;  // 0 while in flight (or never seen complete)
  bool failed = false;     // completed with an error
  int64_t step = -1;       // the position when it was issued
  std::string phase;
  int micro_batch = -1;
  int layer = -1;
};

// Where the step loop is.
struct FlightPosition {
  int64_t step = -1;
  std::string phase;  // "forward", "backward", "gradient reductions", ... ("" before the loop)
  int micro_batch = -1;
  int layer = -1;
};

class FlightRecorder {
 public:
  static FlightRecorder& Get();
  static double Now();  // wall clock, seconds since the epoch

  void SetCapacity(size_t entries);  // the last N ops kept (default 64)

  // An op was issued; returns its id for Completed.
  int64_t Issued(const char* op, const std::string& group, int64_t bytes, int peer);
  void Completed(int64_t id, bool ok);

  void SetStep(int64_t step);
  void SetPhase(const char* phase);
  // A phase of the step outside the layers: the micro-batch and layer are cleared.
  void EnterStepPhase(const char* phase);
  void SetMicroBatch(int micro_batch);
  void SetLayer(int layer);

  FlightPosition position() const;
  std::vector<FlightEntry> Entries() const;  // oldest first
  // Bumped by every completed op and every position change: the watchdog's measure of progress.
  int64_t progress() const { return progress_.load(std::memory_order_relaxed); }

  // {"rank": R, "time_s": now, "progress": n, "position": {...}, "ops": [oldest first]}.
  std::string ToJson(int rank) const;

 private:
  mutable std::mutex mu_;
  size_t capacity_ = 64;
  std::vector<FlightEntry> ring_;  // ring_[i % capacity_] holds op id i + 1
  int64_t next_id_ = 1;
  FlightPosition position_;
  std::atomic<int64_t> progress_{0};
};

// Sets the phase for a scope and restores the previous one after it.
class FlightPhase {
 public:
  explicit FlightPhase(const char* phase);
  ~FlightPhase();
  FlightPhase(const FlightPhase&) = delete;
  FlightPhase& operator=(const FlightPhase&) = delete;

 private:
  std::string previous_;
};

}  // namespace moefold
