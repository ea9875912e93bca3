// Chrome/Perfetto traces of chosen training steps, one JSON file per rank: complete spans ("ph":
// "X", ts/dur in µs of the host's steady clock) on four tracks of the rank (pid = world rank):
// "host" (the training thread), "gpu" (the op-family profiler's scopes, timed by device events),
// "comm" (each collective from issue to observed completion) and "checkpoint" (the writer thread).
// Spans of one track nest (a child lies inside its parent); ops that overlap without nesting (two
// collectives in flight) go to extra lanes of their track ("comm 2", ...). Host, gpu and comm spans
// are recorded only while a traced step is open, so each lies within its step's span; checkpoint
// spans whenever they end between the first traced step's start and the file's write.
//
//   Tracer::Get().Configure("runs/x/trace/rank-00000.json", rank, world, /*first=*/1, /*last=*/2);
//   Tracer::Get().BeginStep(step);
//   { TraceSpan span(TraceTrack::kHost, "optimizer update"); ... }
//   MF_RETURN_IF_ERROR(Tracer::Get().EndStep());  // writes the file after step 2
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/profiler.h"

namespace moefold {

enum class TraceTrack : int { kHost, kGpu, kComm, kCheckpoint };
inline constexpr int kNumTraceTracks = 4;
// "host", "gpu", "comm", "checkpoint".
absl::string_view TraceTrackName(TraceTrack track);

// A span's arguments ("args" of the event), in order: integers, numbers, strings, integer lists.
using TraceValue = std::variant<int64_t, double, std::string, std::vector<int64_t>>;
using TraceArgs = std::vector<std::pair<std::string, TraceValue>>;

// The process's tracer. Thread-safe: the training thread opens and closes steps and records host,
// gpu and comm spans; the checkpoint writer records from its own thread.
class Tracer {
 public:
  using Clock = std::chrono::steady_clock;

  // The one tracer of the process; off until Configure.
  static Tracer& Get();

  // Traces steps first..last (0-based, inclusive) of this rank into `path` (its directory is made
  // when the file is written). Drops whatever an earlier configuration recorded and did not write.
  void Configure(const std::string& path, int rank, int world_size, int64_t first, int64_t last);
  // Off: records nothing, writes nothing; drops what was recorded and not written.
  void Disable();

  // A traced step is open: host, gpu and comm spans are recorded. One relaxed atomic load, for
  // call sites that would build a name or arguments for nothing.
  bool enabled() const { return step_open_.load(std::memory_order_relaxed); }
  // From the first traced step's start until the file is written: checkpoint spans are recorded.
  bool collecting() const { return collecting_.load(std::memory_order_relaxed); }
  // Whether `track`'s spans are being recorded now (enabled() or collecting()).
  bool accepts(TraceTrack track) const {
    return track == TraceTrack::kCheckpoint ? collecting() : enabled();
  }

  // Opens `step` when it is one of the traced steps (true) and notes its start; a step still open
  // (one that failed) is dropped. False, and nothing recorded, for other steps.
  bool BeginStep(int64_t step);
  // Closes the open step (no-op without one): its span ("step N") goes on the host track; after
  // the last traced step the file is written. The Status of that write (naming the path).
  absl::Status EndStep();
  // Writes what was recorded when the file has not been written yet (a run that stopped before
  // its last traced step), then stops collecting. OK with nothing to write.
  absl::Status Flush();

  // Records a span of `track` from `start` to `end` (end ≥ start) when the track accepts spans.
  void Add(TraceTrack track, std::string name, Clock::time_point start, Clock::time_point end,
           TraceArgs args = {});
  // The profiled step's scopes (StepProfile::spans, read with the profiler's device clock) as gpu
  // spans "attention L3" {family, layer}, placed on the host clock at profile.host_begin.
  void AddProfile(const StepProfile& profile);

  // The trace file's path (empty when off).
  std::string path() const;

 private:
  struct Span {
    TraceTrack track;
    std::string name;
    int64_t start_ns;  // the steady clock's count
    int64_t end_ns;
    TraceArgs args;
  };
  Tracer() = default;
  // The recorded spans as the file's JSON text, and the reset to a written state. Locked.
  absl::Status WriteLocked(std::vector<Span> spans);

  mutable std::mutex mutex_;
  std::atomic<bool> step_open_{false};
  std::atomic<bool> collecting_{false};
  std::string path_;
  int rank_ = 0, world_size_ = 1;
  int64_t first_ = 0, last_ = -1;  // traced steps; last < first = off
  int64_t step_ = -1;              // the open step
  Clock::time_point step_start_;
  bool written_ = false;
  std::vector<Span> spans_;
};

// RAII span on `track`: opened only when the track accepts spans at construction, recorded when it
// closes (if it still does). Default-constructed: nothing. Movable, so a helper can return one.
class TraceSpan {
 public:
  TraceSpan() = default;
  TraceSpan(TraceTrack track, absl::string_view name, TraceArgs args = {});
  ~TraceSpan();
  TraceSpan(TraceSpan&& other) noexcept;
  TraceSpan& operator=(TraceSpan&&) = delete;
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

 private:
  bool open_ = false;
  TraceTrack track_ = TraceTrack::kHost;
  std::string name_;
  TraceArgs args_;
  Tracer::Clock::time_point start_;
};

}  // namespace moefold
