// Communication time per group kind, measured by a Communicator decorator. For every op it records
// the op in flight (issue → completion observed: Wait returning, or IsCompleted first answering
// true) and each call the host makes into the op (the issue, IsCompleted polls, Wait) as time the
// compute waited for communication: events recorded on the compute stream before and after the
// call give, on the CPU (host-clock events), the host's time in the call and, on a GPU, the time
// the compute stream sat idle while the host was blocked in it (nothing while the GPU still had
// queued work). Per step and kind: `total_s`, the wall time with an op in flight or a call running
// (a union, so overlapping ops count once), and `exposed_s`, the compute's share of it waiting.
// In a traced step (core/trace.h) each op is also a span of the rank's comm track.
//
//   auto timeline = std::make_shared<CommTimeline>(DefaultStream(device));
//   TimedCommunicator dp(std::move(mpi_dp), timeline);
//   ... the step's ops on dp ...
//   MF_ASSIGN_OR_RETURN(CommTimes times, timeline->Take());  // times["dp"].exposed_s
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/stream.h"
#include "parallel/communicator.h"

namespace moefold::parallel {

// One group kind's communication over a step, in seconds.
struct CommTime {
  double total_s = 0;  // wall time with at least one op in flight or a call into one running
  double exposed_s =
      0;            // the part the compute waited: the host blocked (CPU), the stream idle (GPU)
  int64_t ops = 0;  // ops issued
};
using CommTimes = std::map<std::string, CommTime>;  // by group kind (the communicator's name)

// The record every TimedCommunicator of a ProcessGroups shares. Not thread-safe: the host thread
// that issues the step's communication drives it.
class CommTimeline {
 public:
  using Clock = std::chrono::steady_clock;
  // `compute`: the stream whose waiting counts as exposed (the step's compute stream).
  explicit CommTimeline(const Stream& compute);
  CommTimeline(const CommTimeline&) = delete;
  CommTimeline& operator=(const CommTimeline&) = delete;

  // Runs `call`, a call into an op of group `kind`, as time the compute waited for it.
  void Blocked(const std::string& kind, const std::function<void()>& call);
  // An op of `kind` was in flight from `issued` to `completed`.
  void InFlight(const std::string& kind, Clock::time_point issued, Clock::time_point completed);
  void CountOp(const std::string& kind);

  // The figures of everything recorded since the last Take, by kind; ops still in flight count
  // when they complete. Reads the compute stream's events: call it after the step waited for the
  // device (on a GPU it waits otherwise). A failure to make or record an event during the step
  // (kept, so the op itself never fails for its timing) is returned here, and the record reset.
  absl::StatusOr<CommTimes> Take();

 private:
  struct Section {
    std::string kind;
    size_t slot;  // its start and end events in pool_
  };
  Stream compute_;
  std::map<std::string, std::vector<std::pair<Clock::time_point, Clock::time_point>>> intervals_;
  std::map<std::string, int64_t> ops_;
  std::vector<Section> sections_;                 // this step's blocked calls
  std::map<std::string, double> host_exposed_s_;  // calls beyond the events' bound
  std::vector<std::pair<Event, Event>> pool_;     // events for reuse
  size_t used_ = 0;                               // pool_[0, used_) belong to sections_
  absl::Status status_;
};

// Forwards every op to `inner` and reports it to `timeline` under inner's name. Works returned
// are timed too; their outputs are ready after Wait() as the inner backend's are.
class TimedCommunicator final : public Communicator {
 public:
  TimedCommunicator(std::unique_ptr<Communicator> inner, std::shared_ptr<CommTimeline> timeline);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  const std::vector<int>& world_ranks() const override { return inner_->world_ranks(); }

  absl::StatusOr<std::unique_ptr<Work>> AllReduce(Tensor* tensor,
                                                  const AllReduceOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatter(const Tensor& input, Tensor* output,
                                                      const ReduceScatterOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> AllGather(const Tensor& input, Tensor* output,
                                                  const AllGatherOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> AllGatherV(const Tensor& input,
                                                   const std::vector<int64_t>& rows,
                                                   Tensor* output,
                                                   const AllGatherOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatterV(
      const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
      const ReduceScatterVOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> AllToAllV(const Tensor& input,
                                                  const std::vector<int64_t>& send_rows,
                                                  Tensor* output,
                                                  const std::vector<int64_t>& recv_rows,
                                                  const AllToAllOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Broadcast(Tensor* tensor,
                                                  const BroadcastOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Send(const Tensor& tensor, int peer,
                                             const PointToPointOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Recv(Tensor* tensor, int peer,
                                             const PointToPointOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> Barrier(const BarrierOptions& options) override;

  // The backend's communicator (for its own methods, e.g. NcclCommunicator::WaitStream).
  Communicator& inner() { return *inner_; }

 private:
  // Issues the op through `issue` and wraps its Work. In a traced step (core/trace.h) the op also
  // becomes a span of the comm track named `op`, {group, bytes, peers}: `bytes` of this rank's
  // buffer, `peer` the group rank of a point-to-point op (−1: the whole group).
  absl::StatusOr<std::unique_ptr<Work>> Timed(
      const char* op, int64_t bytes, int peer,
      const std::function<absl::StatusOr<std::unique_ptr<Work>>()>& issue);

  std::unique_ptr<Communicator> inner_;
  std::shared_ptr<CommTimeline> timeline_;
};

// `comm` itself, or the communicator a TimedCommunicator wraps: for code that needs a backend's
// own methods.
Communicator* Untimed(Communicator* comm);

}  // namespace moefold::parallel
