// The tracer: spans kept in memory (steady-clock nanoseconds) while the traced steps run, laid out
// into lanes and written once with nlohmann::json. Lanes: spans sorted by start (longer first on a
// tie) go to the first lane where they nest inside the open span or start after it ended, so every
// lane nests whatever order the spans were recorded in.
#include "core/trace.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/file_io.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace moefold {
namespace {

constexpr const char* kTrackNames[kNumTraceTracks] = {"host", "gpu", "comm", "checkpoint"};

int64_t Ns(Tracer::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// The thread id of a track's lane: the track's own (1..4) for lane 0, then 100·(track + 1) + lane.
int LaneTid(int track, int lane) { return lane == 0 ? track + 1 : 100 * (track + 1) + lane; }

nlohmann::ordered_json ArgsJson(const TraceArgs& args) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& arg : args) {
    std::visit([&](const auto& v) { out[arg.first] = v; }, arg.second);
  }
  return out;
}

nlohmann::ordered_json Metadata(const char* name, int pid, int tid, nlohmann::ordered_json args) {
  nlohmann::ordered_json e;
  e["name"] = name;
  e["ph"] = "M";
  e["pid"] = pid;
  e["tid"] = tid;
  e["args"] = std::move(args);
  return e;
}

}  // namespace

absl::string_view TraceTrackName(TraceTrack track) {
  const int t = static_cast<int>(track);
  MF_CHECK(t >= 0 && t < kNumTraceTracks) << "trace track " << t;
  return kTrackNames[t];
}

Tracer& Tracer::Get() {
  static Tracer* tracer = new Tracer();  // never destroyed: the checkpoint thread may outlive main
  return *tracer;
}

void Tracer::Configure(const std::string& path, int rank, int world_size, int64_t first,
                       int64_t last) {
  std::lock_guard<std::mutex> lock(mutex_);
  path_ = path;
  rank_ = rank;
  world_size_ = world_size;
  first_ = first;
  last_ = last;
  step_ = -1;
  written_ = false;
  spans_.clear();
  step_open_ = false;
  collecting_ = false;
}

void Tracer::Disable() { Configure("", 0, 1, 0, -1); }

std::string Tracer::path() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return path_;
}

bool Tracer::BeginStep(int64_t step) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (step_open_) {
    // The previous step failed before its end: its spans are kept, the step span is not.
    step_open_ = false;
  }
  if (path_.empty() || written_ || step < first_ || step > last_) return false;
  step_ = step;
  step_start_ = Clock::now();
  step_open_ = true;
  collecting_ = true;
  return true;
}

absl::Status Tracer::EndStep() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!step_open_) return absl::OkStatus();
  step_open_ = false;
  spans_.push_back({TraceTrack::kHost,
                    absl::StrCat("step ", step_),
                    Ns(step_start_),
                    Ns(Clock::now()),
                    {{"step", step_}}});
  if (step_ < last_) return absl::OkStatus();
  return WriteLocked(std::move(spans_));
}

absl::Status Tracer::Flush() {
  std::lock_guard<std::mutex> lock(mutex_);
  step_open_ = false;
  if (path_.empty() || written_ || !collecting_) return absl::OkStatus();
  return WriteLocked(std::move(spans_));
}

void Tracer::Add(TraceTrack track, std::string name, Clock::time_point start, Clock::time_point end,
                 TraceArgs args) {
  if (!accepts(track)) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (!accepts(track)) return;  // the step closed (or the file was written) meanwhile
  spans_.push_back({track, std::move(name), Ns(start), Ns(std::max(start, end)), std::move(args)});
}

void Tracer::AddProfile(const StepProfile& profile) {
  if (!enabled()) return;
  auto at = [&](double ms) {
    return profile.host_begin + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double, std::milli>(ms));
  };
  for (const ProfileSpan& s : profile.spans) {
    const std::string family(OpFamilyName(static_cast<OpFamily>(s.family)));
    Add(TraceTrack::kGpu, s.layer >= 0 ? absl::StrCat(family, " L", s.layer) : family,
        at(s.start_ms), at(s.end_ms), {{"family", family}, {"layer", int64_t{s.layer}}});
  }
}

absl::Status Tracer::WriteLocked(std::vector<Span> spans) {
  written_ = true;
  collecting_ = false;
  spans_.clear();
  // Lanes per track: each lane a stack of the spans still open at the next span's start.
  std::stable_sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    if (a.start_ns != b.start_ns) return a.start_ns < b.start_ns;
    return a.end_ns > b.end_ns;
  });
  std::vector<std::vector<std::vector<int64_t>>> lanes(kNumTraceTracks);  // track → lane → ends
  nlohmann::ordered_json events = nlohmann::ordered_json::array();
  events.push_back(Metadata("process_name", rank_, 0, {{"name", absl::StrCat("rank ", rank_)}}));
  events.push_back(Metadata("process_sort_index", rank_, 0, {{"sort_index", rank_}}));
  std::map<int, std::string> lane_names;  // tid → name, for the metadata
  std::vector<nlohmann::ordered_json> complete;
  complete.reserve(spans.size());
  for (Span& span : spans) {
    const int t = static_cast<int>(span.track);
    auto& track_lanes = lanes[t];
    size_t lane = 0;
    for (; lane < track_lanes.size(); ++lane) {
      std::vector<int64_t>& open = track_lanes[lane];
      while (!open.empty() && open.back() <= span.start_ns) open.pop_back();
      if (open.empty() || span.end_ns <= open.back()) break;
    }
    if (lane == track_lanes.size()) track_lanes.emplace_back();
    track_lanes[lane].push_back(span.end_ns);
    const int tid = LaneTid(t, static_cast<int>(lane));
    if (!lane_names.count(tid)) {
      lane_names[tid] =
          lane == 0 ? std::string(kTrackNames[t]) : absl::StrCat(kTrackNames[t], " ", lane + 1);
    }
    nlohmann::ordered_json e;
    e["name"] = std::move(span.name);
    e["cat"] = kTrackNames[t];
    e["ph"] = "X";
    e["ts"] = static_cast<double>(span.start_ns) / 1e3;
    e["dur"] = static_cast<double>(span.end_ns - span.start_ns) / 1e3;
    e["pid"] = rank_;
    e["tid"] = tid;
    e["args"] = ArgsJson(span.args);
    complete.push_back(std::move(e));
  }
  for (const auto& [tid, name] : lane_names) {
    events.push_back(Metadata("thread_name", rank_, tid, {{"name", name}}));
    events.push_back(Metadata("thread_sort_index", rank_, tid, {{"sort_index", tid}}));
  }
  for (auto& e : complete) events.push_back(std::move(e));
  nlohmann::ordered_json trace;
  trace["traceEvents"] = std::move(events);
  trace["displayTimeUnit"] = "ms";
  // Wall-clock anchor: the steady clocks of ranks on one host agree; across hosts a reader aligns
  // them with unix_us − steady_us.
  const int64_t unix_us = std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  trace["otherData"] = {{"rank", rank_},
                        {"world_size", world_size_},
                        {"trace_steps", {first_, last_}},
                        {"clock", "steady"},
                        {"steady_us", Ns(Clock::now()) / 1000},
                        {"unix_us", unix_us}};
  const std::filesystem::path path(path_);
  std::error_code error;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), error);
  if (error) {
    return absl::InternalError(absl::StrCat("trace of rank ", rank_, ": cannot make ",
                                            path.parent_path().string(), ": ", error.message()));
  }
  return Annotate(WriteFileAtomically(path_, trace.dump()), absl::StrCat("trace of rank ", rank_));
}

TraceSpan::TraceSpan(TraceTrack track, absl::string_view name, TraceArgs args) {
  if (!Tracer::Get().accepts(track)) return;
  open_ = true;
  track_ = track;
  name_ = std::string(name);
  args_ = std::move(args);
  start_ = Tracer::Clock::now();
}

TraceSpan::TraceSpan(TraceSpan&& other) noexcept
    : open_(other.open_),
      track_(other.track_),
      name_(std::move(other.name_)),
      args_(std::move(other.args_)),
      start_(other.start_) {
  other.open_ = false;
}

TraceSpan::~TraceSpan() {
  if (open_) {
    Tracer::Get().Add(track_, std::move(name_), start_, Tracer::Clock::now(), std::move(args_));
  }
}

}  // namespace moefold
