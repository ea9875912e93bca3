// Per-op-family profiling of a training step: events recorded on the compute stream at every scope
// boundary cut the step into segments, and each segment belongs to the innermost open scope (or to
// nobody), so family times are exclusive and they and the unattributed time sum to the step time.
// One code path for both devices: CPU events read the host clock, CUDA events the GPU's.
//
//   MF_ASSIGN_OR_RETURN(std::unique_ptr<Profiler> profiler, Profiler::Create(device));
//   MF_RETURN_IF_ERROR(profiler->BeginStep(stream));
//   { ProfileScope scope(profiler.get(), OpFamily::kAttention, stream, /*layer=*/3); ... }
//   MF_ASSIGN_OR_RETURN(StepProfile step, profiler->EndStep(stream));
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/device.h"
#include "core/stream.h"

namespace moefold {

enum class OpFamily : int {
  kAttention,
  kGemm,
  kExpertGemm,
  kRouter,
  kPermute,
  kNorm,
  kActivation,
  kEmbedding,
  kLoss,
  kOptimizer,
  kCommunication,
  kOther
};
inline constexpr int kNumOpFamilies = 12;

// "attention", "gemm", "expert_gemm", "router", "permute", "norm", "activation", "embedding",
// "loss", "optimizer", "communication", "other".
absl::string_view OpFamilyName(OpFamily family);

// One scope of a profiled step as an interval (traces): milliseconds from the step's first event
// on the profiled device's clock. Scopes nest, so their intervals do.
struct ProfileSpan {
  double start_ms = 0;
  double end_ms = 0;
  int family = 0;  // an OpFamily
  int layer = -1;  // -1 = none
};

// One step's figures, in milliseconds of the profiled device's clock.
struct StepProfile {
  double step_ms = 0;                     // first event of the step to the last
  double family_ms[kNumOpFamilies] = {};  // exclusive time per family, summed over layers
  std::map<std::pair<int, int>, double> family_layer_ms;  // (family, layer) -> ms; layer -1 = none
  int64_t calls[kNumOpFamilies] = {};
  double unattributed_ms = 0;  // step_ms − Σ family_ms: GPU idle (host-bound) or unscoped work
  // Every scope in the order it closed, when the profiler records spans (set_record_spans).
  std::vector<ProfileSpan> spans;
  // The host's steady clock when BeginStep recorded the first event: a CPU event's own time, and
  // on a GPU the enqueue, which the idle device runs within its launch latency.
  std::chrono::steady_clock::time_point host_begin;
};

// Times the scopes of one step at a time. Not thread-safe: the host thread that enqueues the
// step's work drives it. All scopes of a step are recorded on streams of the profiler's device and
// are cut in the order they were recorded, so they should all go to the compute stream; GPU idle
// time inside a scope (the host launching too slowly) counts to that scope.
class Profiler {
 public:
  // A profiler of `device` with a few events made up front (CUDA: timing events).
  // FailedPrecondition when the device's backend or the GPU is missing.
  static absl::StatusOr<std::unique_ptr<Profiler>> Create(const Device& device);
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // Records the step's first event on `stream`. FailedPrecondition when a step is already open,
  // InvalidArgument when `stream` is of another device.
  absl::Status BeginStep(const Stream& stream);
  // Exclusive time: a scope opened inside another takes its time out of the parent's (the
  // parent's segment ends when the child starts and resumes when it ends). Both are no-ops
  // outside a step; a failure (making or recording an event, a Pop without a Push) is kept and
  // returned by EndStep, so the step it spoils is never reported.
  void Push(OpFamily family, int layer, const Stream& stream);
  void Pop(const Stream& stream);
  // Records the end, waits for the step's events (one host wait, at the end of a profiled step),
  // returns the step's figures and resets for the next step. Events are pooled and reused.
  // FailedPrecondition outside a step or with scopes still open (the profiler is reset anyway);
  // a CUDA failure as its Status.
  absl::StatusOr<StepProfile> EndStep(const Stream& stream);
  bool active() const { return active_; }  // between BeginStep and EndStep
  // Whether EndStep lists every scope's interval (StepProfile::spans); off by default. Set between
  // steps.
  void set_record_spans(bool on) { record_spans_ = on; }
  // Incremented by every BeginStep: a scope opened in one step does not close one of the next.
  uint64_t step_serial() const { return step_serial_; }
  const Device& device() const { return device_; }

 private:
  // A boundary between two segments: the event recorded there and the scope the segment that ends
  // here belonged to (family −1 = no scope: unattributed).
  struct Mark {
    int event;
    int family;
    int layer;
  };
  struct Scope {
    int family;
    int layer;
    int first_mark;  // the mark that opened it (index in marks_)
  };
  struct ClosedScope {
    int family;
    int layer;
    int first_mark, last_mark;
  };
  explicit Profiler(const Device& device) : device_(device) {}
  // Records the next pooled event on `stream` and a mark for the segment that ends there.
  void AddMark(const Stream& stream);
  void Fail(absl::Status status);
  void Reset();

  Device device_;
  std::vector<Event> pool_;  // grows to the largest step seen; never shrinks
  std::vector<Mark> marks_;
  std::vector<Scope> stack_;
  std::vector<ClosedScope> closed_;  // with record_spans_
  StepProfile pending_;              // calls and the (family, layer) keys seen so far this step
  absl::Status error_;
  bool active_ = false;
  bool record_spans_ = false;
  uint64_t step_serial_ = 0;
};

// RAII: no-op when profiler is null or inactive; also opens an NVTX range named after the family
// (and layer: "attention L3") in CUDA builds, so Nsight shows the same structure. Without an active
// profiler the range is opened only when an NVTX tool is attached (Nsight), so unprofiled steps
// pay for one flag test per scope.
class ProfileScope {
 public:
  ProfileScope(Profiler* profiler, OpFamily family, const Stream& stream, int layer = -1);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  Profiler* profiler_ = nullptr;  // set only when this scope pushed
  Stream stream_;                 // where it pushed (a copy: the caller's may be a temporary)
  uint64_t step_serial_ = 0;
  bool nvtx_ = false;
};

// NVTX range without timing, for layers and phases ("layer 3 forward", "optimizer"); no-op in CPU
// builds and when no tool listens. `name` is copied by NVTX when the range opens.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name);
  ~NvtxRange();
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;

 private:
  bool open_ = false;
};

// Sums several steps' profiles (median per family is the caller's business).
StepProfile SumProfiles(const std::vector<StepProfile>& steps);

// A fixed-width text table: family, ms per step, share of the step, calls per step, one row per
// family with time or calls (most time first); last rows "unattributed (idle or unscoped)" and
// "step". `steps` (≥ 1) divides the sums.
std::string FormatProfileTable(const StepProfile& sum, int steps);

}  // namespace moefold
