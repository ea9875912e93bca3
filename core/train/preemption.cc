// Async-signal-safe handlers: an atomic flag, or write + _exit on the second signal.
#include "core/train/preemption.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <cstring>

namespace moefold::train {
namespace {

std::atomic<int> requested{0};
std::atomic<int64_t> first_ns{0};
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free);

// A second signal this soon after the first is the same request delivered twice (by the scheduler
// to every process and by a launcher passing it on), not an order to exit at once.
constexpr int64_t kDuplicateNs = 2'000'000'000;

int64_t MonotonicNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);  // async-signal-safe
  return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

void OnSignal(int signo) {
  int expected = 0;
  if (requested.compare_exchange_strong(expected, signo)) {
    first_ns = MonotonicNs();
    constexpr char kMessage[] =
        "moefold: stop requested; finishing the step and saving a checkpoint (signal again to "
        "exit at once)\n";
    (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
    return;
  }
  if (MonotonicNs() - first_ns.load() < kDuplicateNs) return;
  constexpr char kMessage[] = "moefold: second stop signal; exiting at once\n";
  (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  _exit(128 + signo);
}

}  // namespace

void InstallPreemptionHandlers() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int PreemptionSignal() { return requested.load(std::memory_order_relaxed); }

}  // namespace moefold::train
