// Hang detection. A thread per rank writes the rank's heartbeat every second: the flight recorder
// (core/flight_recorder.h: position and last ops) as RUN_DIR/flight/rank{R}.json, stamped with the
// time. While the step loop runs (armed) and makes no progress — no op completed, no phase, layer
// or micro-batch changed — for hang_timeout_s, the rank reads every rank's file and ends the job
// with a report naming the stuck rank(s) and every rank's last completed and current operation.
//
// How a healthy rank names a stuck one it cannot hear from: a rank stopped with SIGSTOP (or
// frozen by the kernel) stops writing its heartbeat, since its watchdog thread stops with it; a
// rank busy outside communication keeps its heartbeat but has no op in flight while the others
// wait in one. So the stuck ranks are those whose heartbeat is stale, else those not waiting in a
// communication op, else (every rank waits: mismatched collectives) all of them.
//
//   auto watchdog = Watchdog::Start({.rank = r, .world_size = n, .dir = run_dir + "/flight",
//                                    .hang_timeout_s = 60, .on_hang = abort_job});
//   watchdog->Arm(true);  ... the step loop ...  watchdog->Arm(false);
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace moefold::train {

struct WatchdogOptions {
  int rank = 0;
  int world_size = 1;
  std::string dir;              // where rank{R}.json goes (RUN_DIR/flight), shared by all ranks
  double hang_timeout_s = 60;   // 0: heartbeats only, no hang detection
  double heartbeat_s = 1;       // capped at hang_timeout_s / 5
  // Ends the job after a hang was reported (e.g. MPI_Abort with kExitHang); must not return.
  // Empty: _exit(kExitHang).
  std::function<void(int exit_code)> end_job;
};

class Watchdog {
 public:
  static absl::StatusOr<std::unique_ptr<Watchdog>> Start(const WatchdogOptions& options);
  ~Watchdog();  // stops the thread (the last heartbeat stays)
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void Stop();  // ends the thread (idempotent); heartbeats stop
  // Hangs count only while armed (the step loop); arming starts the stall clock afresh.
  void Arm(bool armed);
  // Writes the heartbeat now with "end": reason ("ok", "preempted", "error: ..."): the record an
  // abnormal end leaves.
  void WriteFinal(const std::string& reason);

  // The report for the ranks' heartbeat files in `dir` as seen at `now_s` by `reporter` (exposed
  // for tests): stuck ranks first, then every rank's position, current and last completed op.
  static std::string Report(const std::string& dir, int world_size, int reporter, double now_s,
                            double stale_s, double stalled_s, std::string* stuck_ranks);

 private:
  explicit Watchdog(const WatchdogOptions& options);
  void Loop();
  void WriteHeartbeat(const std::string& end);
  [[noreturn]] void Hang(double stalled_s);
  std::string PathOf(int rank) const;

  WatchdogOptions options_;
  std::thread thread_;
  std::mutex mu_;       // stop_ and the thread's sleep
  std::mutex file_mu_;  // one writer of the heartbeat at a time
  std::condition_variable wake_;
  bool stop_ = false;
  std::atomic<bool> armed_{false};
  std::atomic<bool> rearmed_{false};
};

}  // namespace moefold::train
