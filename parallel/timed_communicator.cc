// The timing decorator: host-clock intervals for the ops in flight, compute-stream events around
// every call into an op for the exposed part.
#include "parallel/timed_communicator.h"

#include <algorithm>
#include <optional>

#include "core/flight_recorder.h"
#include "core/trace.h"

namespace moefold::parallel {
namespace {

using Clock = CommTimeline::Clock;

// Calls timed with events between two Takes; beyond, a call's exposure is its host time (the
// bound keeps a caller that never takes from holding ever more device events).
constexpr size_t kMaxSections = size_t{1} << 16;

// An op of a traced step: its span's name and arguments, recorded when its completion is seen.
struct TracedOp {
  const char* op;
  TraceArgs args;
};

void RecordSpan(const std::optional<TracedOp>& traced, Clock::time_point issued,
                Clock::time_point completed) {
  if (traced) Tracer::Get().Add(TraceTrack::kComm, traced->op, issued, completed, traced->args);
}

class TimedWork final : public Work {
 public:
  TimedWork(std::unique_ptr<Work> inner, std::shared_ptr<CommTimeline> timeline, std::string kind,
            Clock::time_point issued, std::optional<TracedOp> traced, int64_t flight_id)
      : flight_id_(flight_id),
        inner_(std::move(inner)),
        timeline_(std::move(timeline)),
        kind_(std::move(kind)),
        issued_(issued),
        traced_(std::move(traced)) {}
  // A Work dropped before its completion was observed (a failed step) was in flight until now.
  ~TimedWork() override {
    if (completed_) return;
    const Clock::time_point now = Clock::now();
    timeline_->InFlight(kind_, issued_, now);
    RecordSpan(traced_, issued_, now);
  }

  // Always forwarded, even after IsCompleted answered true: a backend may still deliver the
  // outputs in Wait (host staging copies them back), and that time is exposed too.
  absl::Status Wait() override {
    absl::Status status;
    timeline_->Blocked(kind_, [&] { status = inner_->Wait(); });
    if (status.ok()) {
      Complete();
    } else {
      FlightRecorder::Get().Completed(flight_id_, /*ok=*/false);
    }
    return status;
  }

  bool IsCompleted() override {
    if (completed_) return true;
    bool done = false;
    // A poll is a call into the backend too (MPI progresses, and may reduce, inside it).
    timeline_->Blocked(kind_, [&] { done = inner_->IsCompleted(); });
    if (done) Complete();
    return done;
  }

 private:
  void Complete() {
    if (completed_) return;
    completed_ = true;
    FlightRecorder::Get().Completed(flight_id_, /*ok=*/true);
    const Clock::time_point now = Clock::now();
    timeline_->InFlight(kind_, issued_, now);
    RecordSpan(traced_, issued_, now);
  }

  int64_t flight_id_;  // the op in the flight recorder (core/flight_recorder.h)
  std::unique_ptr<Work> inner_;
  std::shared_ptr<CommTimeline> timeline_;
  std::string kind_;
  Clock::time_point issued_;
  std::optional<TracedOp> traced_;
  bool completed_ = false;
};

}  // namespace

CommTimeline::CommTimeline(const Stream& compute) : compute_(compute) {}

void CommTimeline::Blocked(const std::string& kind, const std::function<void()>& call) {
  const Clock::time_point begin = Clock::now();
  // Indices, not references: the pool may grow while `call` runs.
  const size_t slot = used_;
  bool timed = status_.ok() && slot < kMaxSections;
  if (timed && slot == pool_.size()) {
    absl::StatusOr<Event> start = Event::Create(compute_.device(), /*timing=*/true);
    absl::StatusOr<Event> end =
        start.ok() ? Event::Create(compute_.device(), /*timing=*/true) : start.status();
    if (end.ok()) {
      pool_.emplace_back(*start, *end);
    } else {
      status_ = end.status();
      timed = false;
    }
  }
  if (timed) {
    ++used_;
    status_ = pool_[slot].first.Record(compute_);
    timed = status_.ok();
  }
  call();
  const Clock::time_point end = Clock::now();
  if (timed) {
    status_ = pool_[slot].second.Record(compute_);
    if (status_.ok()) sections_.push_back({kind, slot});
  } else if (slot >= kMaxSections) {
    host_exposed_s_[kind] += std::chrono::duration<double>(end - begin).count();
  }
  intervals_[kind].emplace_back(begin, end);
}

void CommTimeline::InFlight(const std::string& kind, Clock::time_point issued,
                            Clock::time_point completed) {
  intervals_[kind].emplace_back(issued, completed);
}

void CommTimeline::CountOp(const std::string& kind) { ++ops_[kind]; }

absl::StatusOr<CommTimes> CommTimeline::Take() {
  CommTimes times;
  absl::Status status = status_;
  for (const Section& section : sections_) {
    if (!status.ok()) break;
    const auto& [start, end] = pool_[section.slot];
    // Complete after the step's device wait; otherwise this is the one wait.
    absl::StatusOr<bool> done = end.Query();
    if (done.ok() && !*done) {
      const absl::Status waited = end.Synchronize();
      if (!waited.ok()) done = waited;
    }
    if (!done.ok()) {
      status = done.status();
      break;
    }
    absl::StatusOr<float> ms = Event::ElapsedMs(start, end);
    if (!ms.ok()) {
      status = ms.status();
      break;
    }
    times[section.kind].exposed_s += std::max(0.0f, *ms) * 1e-3;
  }
  // The union of each kind's intervals: ops in flight together count once.
  for (auto& [kind, list] : intervals_) {
    std::sort(list.begin(), list.end());
    double total = 0;
    Clock::time_point open = list.front().first, close = list.front().second;
    for (const auto& [begin, end] : list) {
      if (begin > close) {
        total += std::chrono::duration<double>(close - open).count();
        open = begin;
        close = end;
      } else {
        close = std::max(close, end);
      }
    }
    total += std::chrono::duration<double>(close - open).count();
    times[kind].total_s = total;
  }
  for (const auto& [kind, n] : ops_) times[kind].ops = n;
  for (const auto& [kind, seconds] : host_exposed_s_) times[kind].exposed_s += seconds;
  intervals_.clear();
  host_exposed_s_.clear();
  ops_.clear();
  sections_.clear();
  used_ = 0;
  status_ = absl::OkStatus();
  if (!status.ok()) return status;
  return times;
}

TimedCommunicator::TimedCommunicator(std::unique_ptr<Communicator> inner,
                                     std::shared_ptr<CommTimeline> timeline)
    : inner_(std::move(inner)), timeline_(std::move(timeline)) {}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::Timed(
    const char* op, int64_t bytes, int peer,
    const std::function<absl::StatusOr<std::unique_ptr<Work>>()>& issue) {
  std::optional<TracedOp> traced;
  if (Tracer::Get().enabled()) {
    const std::vector<int>& ranks = world_ranks();
    std::vector<int64_t> peers;
    if (peer >= 0 && peer < static_cast<int>(ranks.size())) {
      peers.push_back(ranks[peer]);
    } else {
      peers.assign(ranks.begin(), ranks.end());
    }
    traced = TracedOp{op, {{"group", name()}, {"bytes", bytes}, {"peers", std::move(peers)}}};
  }
  const int peer_world =
      peer >= 0 && peer < static_cast<int>(world_ranks().size()) ? world_ranks()[peer] : -1;
  const int64_t flight_id = FlightRecorder::Get().Issued(op, name(), bytes, peer_world);
  const Clock::time_point issued = Clock::now();
  absl::StatusOr<std::unique_ptr<Work>> work = absl::InternalError("not issued");
  timeline_->Blocked(name(), [&] { work = issue(); });
  timeline_->CountOp(name());
  if (!work.ok()) {
    const Clock::time_point now = Clock::now();
    timeline_->InFlight(name(), issued, now);
    RecordSpan(traced, issued, now);
    FlightRecorder::Get().Completed(flight_id, /*ok=*/false);
    return work.status();
  }
  return std::unique_ptr<Work>(new TimedWork(std::move(*work), timeline_, name(), issued,
                                             std::move(traced), flight_id));
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::AllReduce(
    Tensor* tensor, const AllReduceOptions& options) {
  return Timed("all_reduce", tensor->nbytes(), -1,
               [&] { return inner_->AllReduce(tensor, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::ReduceScatter(
    const Tensor& input, Tensor* output, const ReduceScatterOptions& options) {
  return Timed("reduce_scatter", input.nbytes(), -1,
               [&] { return inner_->ReduceScatter(input, output, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::AllGather(
    const Tensor& input, Tensor* output, const AllGatherOptions& options) {
  return Timed("all_gather", output->nbytes(), -1,
               [&] { return inner_->AllGather(input, output, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::AllGatherV(
    const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
    const AllGatherOptions& options) {
  return Timed("all_gather_v", output->nbytes(), -1,
               [&] { return inner_->AllGatherV(input, rows, output, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::ReduceScatterV(
    const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
    const ReduceScatterVOptions& options) {
  return Timed("reduce_scatter_v", input.nbytes(), -1,
               [&] { return inner_->ReduceScatterV(input, rows, output, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::AllToAllV(
    const Tensor& input, const std::vector<int64_t>& send_rows, Tensor* output,
    const std::vector<int64_t>& recv_rows, const AllToAllOptions& options) {
  return Timed("all_to_all_v", input.nbytes(), -1,
               [&] { return inner_->AllToAllV(input, send_rows, output, recv_rows, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::Broadcast(
    Tensor* tensor, const BroadcastOptions& options) {
  return Timed("broadcast", tensor->nbytes(), -1,
               [&] { return inner_->Broadcast(tensor, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::Send(const Tensor& tensor, int peer,
                                                              const PointToPointOptions& options) {
  return Timed("send", tensor.nbytes(), peer, [&] { return inner_->Send(tensor, peer, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::Recv(Tensor* tensor, int peer,
                                                              const PointToPointOptions& options) {
  return Timed("recv", tensor->nbytes(), peer, [&] { return inner_->Recv(tensor, peer, options); });
}

absl::StatusOr<std::unique_ptr<Work>> TimedCommunicator::Barrier(const BarrierOptions& options) {
  return Timed("barrier", 0, -1, [&] { return inner_->Barrier(options); });
}

Communicator* Untimed(Communicator* comm) {
  auto* timed = dynamic_cast<TimedCommunicator*>(comm);
  return timed != nullptr ? &timed->inner() : comm;
}

}  // namespace moefold::parallel
