// The per-op-family profiler: a step is a list of marks (one pooled event each) at every scope
// boundary; the time between two marks belongs to the scope on top of the stack when the later
// mark was made. Times are read relative to the step's first event, so the segments telescope and
// the families plus the unattributed time add up to the step exactly.
#include "core/profiler.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/cuda_runtime.h"
#include "core/nvtx.h"
#include "core/status.h"

namespace moefold {
namespace {

constexpr const char* kFamilyNames[kNumOpFamilies] = {
    "attention",  "gemm",      "expert_gemm", "router",    "permute",       "norm",
    "activation", "embedding", "loss",        "optimizer", "communication", "other"};

const char* FamilyCName(OpFamily family) {
  const int f = static_cast<int>(family);
  MF_CHECK(f >= 0 && f < kNumOpFamilies) << "op family " << f;
  return kFamilyNames[f];
}

// Events made with the profiler, before any step needs them: enough for a small model's step, so
// a typical step allocates none after the first.
constexpr int kInitialEvents = 64;

}  // namespace

absl::string_view OpFamilyName(OpFamily family) { return FamilyCName(family); }

absl::StatusOr<std::unique_ptr<Profiler>> Profiler::Create(const Device& device) {
  // Checked here: making an event of a missing GPU aborts rather than failing.
  if (device.is_cuda() && (device.index < 0 || device.index >= cuda::DeviceCount())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "profiler of ", device.ToString(), ": no such GPU (", cuda::DeviceCount(), " visible",
        cuda::BackendBuilt() ? "" : "; moefold was built without the CUDA backend", ")"));
  }
  std::unique_ptr<Profiler> profiler(new Profiler(device));
  profiler->pool_.reserve(kInitialEvents);
  for (int i = 0; i < kInitialEvents; ++i) {
    absl::StatusOr<Event> event = Event::Create(device, /*timing=*/true);
    if (!event.ok()) {
      return Annotate(event.status(), absl::StrCat("profiler of ", device.ToString()));
    }
    profiler->pool_.push_back(*std::move(event));
  }
  return profiler;
}

Profiler::~Profiler() = default;

void Profiler::Fail(absl::Status status) {
  if (error_.ok()) error_ = std::move(status);
}

void Profiler::Reset() {
  marks_.clear();
  stack_.clear();
  closed_.clear();
  pending_ = StepProfile();
  error_ = absl::OkStatus();
  active_ = false;
}

void Profiler::AddMark(const Stream& stream) {
  if (!error_.ok()) return;  // the step is spoilt already; EndStep reports the first failure
  if (!(stream.device() == device_)) {
    Fail(absl::InvalidArgumentError(absl::StrCat(
        "profiler of ", device_.ToString(), " given a stream of ", stream.device().ToString())));
    return;
  }
  const int index = static_cast<int>(marks_.size());
  if (index == static_cast<int>(pool_.size())) {
    absl::StatusOr<Event> event = Event::Create(device_, /*timing=*/true);
    if (!event.ok()) return Fail(Annotate(event.status(), "profiler event"));
    pool_.push_back(*std::move(event));
  }
  const absl::Status recorded = pool_[index].Record(stream);
  if (!recorded.ok()) return Fail(Annotate(recorded, "profiler event"));
  const Scope owner = stack_.empty() ? Scope{-1, -1, -1} : stack_.back();
  marks_.push_back({index, owner.family, owner.layer});
}

absl::Status Profiler::BeginStep(const Stream& stream) {
  if (active_) return absl::FailedPreconditionError("Profiler::BeginStep: a step is open already");
  if (!(stream.device() == device_)) {
    return absl::InvalidArgumentError(absl::StrCat("Profiler::BeginStep: profiler of ",
                                                   device_.ToString(), " given a stream of ",
                                                   stream.device().ToString()));
  }
  Reset();
  active_ = true;
  ++step_serial_;
  pending_.host_begin = std::chrono::steady_clock::now();
  AddMark(stream);
  if (!error_.ok()) {
    const absl::Status error = error_;
    Reset();
    return error;
  }
  return absl::OkStatus();
}

void Profiler::Push(OpFamily family, int layer, const Stream& stream) {
  if (!active_) return;
  const int f = static_cast<int>(family);
  MF_CHECK(f >= 0 && f < kNumOpFamilies) << "op family " << f;
  AddMark(stream);  // ends the parent's (or the unattributed) segment
  stack_.push_back({f, layer, static_cast<int>(marks_.size()) - 1});
  ++pending_.calls[f];
  pending_.family_layer_ms.try_emplace({f, layer}, 0.0);
}

void Profiler::Pop(const Stream& stream) {
  if (!active_) return;
  if (stack_.empty()) {
    return Fail(absl::FailedPreconditionError("Profiler::Pop without an open scope"));
  }
  AddMark(stream);  // ends the scope's own segment; the parent's resumes
  const Scope scope = stack_.back();
  stack_.pop_back();
  // Marks are only missing from a spoilt step, which EndStep never reads.
  if (record_spans_ && error_.ok()) {
    closed_.push_back(
        {scope.family, scope.layer, scope.first_mark, static_cast<int>(marks_.size()) - 1});
  }
}

absl::StatusOr<StepProfile> Profiler::EndStep(const Stream& stream) {
  if (!active_) return absl::FailedPreconditionError("Profiler::EndStep outside a step");
  AddMark(stream);
  if (!stack_.empty()) {
    std::string open;
    for (const Scope& s : stack_) {
      absl::StrAppend(&open, open.empty() ? "" : ", ", kFamilyNames[s.family], " (layer ", s.layer,
                      ")");
    }
    Fail(absl::FailedPreconditionError(
        absl::StrCat("Profiler::EndStep with scopes still open: ", open)));
  }
  if (!error_.ok()) {
    const absl::Status error = error_;
    Reset();
    return error;
  }
  StepProfile profile = std::move(pending_);
  absl::Status status = absl::OkStatus();
  // The last event completes last on the compute stream, so the waits after the first return at
  // once; waiting on each still covers marks recorded on another stream of the device.
  for (auto it = marks_.rbegin(); it != marks_.rend() && status.ok(); ++it) {
    status = pool_[it->event].Synchronize();
  }
  double previous = 0;
  std::vector<double> at_ms(marks_.size(), 0.0);  // each mark's time from the first
  for (size_t i = 1; i < marks_.size() && status.ok(); ++i) {
    const absl::StatusOr<float> t =
        Event::ElapsedMs(pool_[marks_[0].event], pool_[marks_[i].event]);
    if (!t.ok()) {
      status = t.status();
      break;
    }
    at_ms[i] = *t;
    const double segment = *t - previous;
    previous = *t;
    const Mark& m = marks_[i];
    if (m.family < 0) {
      profile.unattributed_ms += segment;
    } else {
      profile.family_ms[m.family] += segment;
      profile.family_layer_ms[{m.family, m.layer}] += segment;
    }
  }
  profile.step_ms = previous;
  for (const ClosedScope& c : closed_) {
    profile.spans.push_back({at_ms[c.first_mark], at_ms[c.last_mark], c.family, c.layer});
  }
  Reset();
  if (!status.ok()) return Annotate(status, "Profiler::EndStep");
  return profile;
}

ProfileScope::ProfileScope(Profiler* profiler, OpFamily family, const Stream& stream, int layer)
    : nvtx_(nvtx::ToolAttached()) {
  if (profiler != nullptr && profiler->active()) {
    profiler->Push(family, layer, stream);
    profiler_ = profiler;
    stream_ = stream;
    step_serial_ = profiler->step_serial();
  }
  if (nvtx_) {
    char name[48];
    if (layer >= 0) {
      std::snprintf(name, sizeof(name), "%s L%d", FamilyCName(family), layer);
      nvtx::PushRange(name);
    } else {
      nvtx::PushRange(FamilyCName(family));
    }
  }
}

ProfileScope::~ProfileScope() {
  if (nvtx_) nvtx::PopRange();
  // A scope that outlived its step (EndStep ran, maybe a new step began) must not close a scope of
  // the next one.
  if (profiler_ != nullptr && profiler_->active() && profiler_->step_serial() == step_serial_) {
    profiler_->Pop(stream_);
  }
}

NvtxRange::NvtxRange(const char* name) : open_(nvtx::ToolAttached()) {
  if (open_) nvtx::PushRange(name);
}

NvtxRange::~NvtxRange() {
  if (open_) nvtx::PopRange();
}

StepProfile SumProfiles(const std::vector<StepProfile>& steps) {
  StepProfile sum;
  for (const StepProfile& s : steps) {
    sum.step_ms += s.step_ms;
    sum.unattributed_ms += s.unattributed_ms;
    for (int f = 0; f < kNumOpFamilies; ++f) {
      sum.family_ms[f] += s.family_ms[f];
      sum.calls[f] += s.calls[f];
    }
    for (const auto& [key, ms] : s.family_layer_ms) sum.family_layer_ms[key] += ms;
  }
  return sum;
}

std::string FormatProfileTable(const StepProfile& sum, int steps) {
  MF_CHECK_GE(steps, 1) << "FormatProfileTable";
  const double n = steps;
  const double step_ms = sum.step_ms / n;
  auto share = [&](double ms) { return step_ms > 0 ? 100.0 * ms / step_ms : 0.0; };
  std::vector<int> families;
  for (int f = 0; f < kNumOpFamilies; ++f) {
    if (sum.family_ms[f] != 0 || sum.calls[f] != 0) families.push_back(f);
  }
  std::stable_sort(families.begin(), families.end(),
                   [&](int a, int b) { return sum.family_ms[a] > sum.family_ms[b]; });
  constexpr const char* kUnattributed = "unattributed (idle or unscoped)";
  std::string table =
      absl::StrFormat("%-32s %12s %8s %12s\n", "family", "ms/step", "share", "calls/step");
  for (int f : families) {
    absl::StrAppendFormat(&table, "%-32s %12.3f %7.1f%% %12.1f\n", kFamilyNames[f],
                          sum.family_ms[f] / n, share(sum.family_ms[f] / n), sum.calls[f] / n);
  }
  absl::StrAppendFormat(&table, "%-32s %12.3f %7.1f%%\n", kUnattributed, sum.unattributed_ms / n,
                        share(sum.unattributed_ms / n));
  absl::StrAppendFormat(&table, "%-32s %12.3f %7.1f%%\n", "step", step_ms, share(step_ms));
  return table;
}

}  // namespace moefold
