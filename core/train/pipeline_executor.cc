// Schedule execution with point-to-point activations and gradients.
#include "core/train/pipeline_executor.h"

#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/flight_recorder.h"
#include "core/stream.h"
#include "core/trace.h"

namespace moefold::train {

PipelineExecutor::PipelineExecutor(std::vector<model::Decoder*> chunks,
                                   parallel::Communicator* pp, parallel::ScheduleKind kind,
                                   Shape activation)
    : chunks_(std::move(chunks)), pp_(pp), kind_(kind), activation_(std::move(activation)) {}

absl::Status PipelineExecutor::Run(const model::StepContext& base,
                                   const std::vector<model::MicroBatch>& batches,
                                   const PipelineCallbacks& cb) {
  using Type = parallel::PipelineAction::Type;
  const int pp = pp_size(), chunks = static_cast<int>(chunks_.size());
  const int num_micro = static_cast<int>(batches.size()), stages = pp * chunks;
  MF_ASSIGN_OR_RETURN(schedule_,
                      parallel::BuildSchedule(kind_, pp, stage(), num_micro, chunks));
  // The last backward of each chunk completes its gradients.
  std::vector<size_t> last_backward(chunks, 0);
  for (size_t i = 0; i < schedule_.size(); ++i) {
    if (schedule_[i].type == Type::kBackward) last_backward[schedule_[i].chunk] = i;
  }
  // This rank's transfers in the order every rank agrees on (parallel::BuildTransfers): sends as
  // soon as their data exists, receives posted as early as that order allows, so that a transport
  // matching by issue order on one queue per rank (NCCL) neither mismatches nor deadlocks.
  std::vector<parallel::PipelineTransfer> transfers;
  if (pp > 1) {
    MF_ASSIGN_OR_RETURN(auto all, parallel::BuildTransfers(kind_, pp, num_micro, chunks));
    transfers = std::move(all[stage()]);
  }
  // Message tags (for MPI; NCCL has none and needs none): the receiving virtual stage and
  // micro-batch, forward and backward apart.
  auto tag = [&](int m, int to_stage, bool backward) {
    return 2 * (m * stages + to_stage) + (backward ? 1 : 0);
  };
  using Message = std::tuple<bool, int, int>;  // (backward, micro-batch, receiving virtual stage)
  std::map<Message, Tensor> outgoing;          // produced, not yet sent
  struct Posted {
    Tensor tensor;
    std::unique_ptr<parallel::Work> work;
  };
  std::map<Message, Posted> incoming;  // receives posted, not yet consumed
  std::vector<std::pair<Tensor, std::unique_ptr<parallel::Work>>> sends;
  size_t next = 0;
  std::map<std::pair<int, int>, model::Decoder::Saved> saved;  // (chunk, micro)
  std::map<std::pair<int, int>, model::BackwardSeeds> seeds;
  auto issue = [&]() -> absl::Status {
    for (; next < transfers.size(); ++next) {
      const parallel::PipelineTransfer& t = transfers[next];
      const Message key{t.backward, t.micro, t.to_stage};
      const parallel::PointToPointOptions options{.tag = tag(t.micro, t.to_stage, t.backward)};
      if (t.send) {
        auto it = outgoing.find(key);
        if (it == outgoing.end()) break;  // its action has not run yet
        auto work = pp_->Send(it->second, t.peer, options);
        MF_RETURN_IF_ERROR(Annotate(
            work.status(),
            absl::StrCat("pipeline send of micro-batch ", t.micro, " to stage ", t.to_stage)));
        sends.emplace_back(std::move(it->second), std::move(*work));
        outgoing.erase(it);
      } else {
        Tensor buffer = base.Act(activation_);
        auto work = pp_->Recv(&buffer, t.peer, options);
        MF_RETURN_IF_ERROR(Annotate(
            work.status(),
            absl::StrCat("pipeline receive of micro-batch ", t.micro, " for stage ", t.to_stage)));
        incoming.emplace(key, Posted{std::move(buffer), std::move(*work)});
      }
    }
    return absl::OkStatus();
  };
  auto send = [&](Tensor t, int to_stage, int m, bool backward) -> absl::Status {
    outgoing.emplace(Message{backward, m, to_stage}, std::move(t));
    return issue();
  };
  auto receive = [&](int from_stage, int to_stage, int m, bool backward) -> absl::StatusOr<Tensor> {
    MF_RETURN_IF_ERROR(issue());
    auto it = incoming.find(Message{backward, m, to_stage});
    MF_CHECK(it != incoming.end())
        << "pipeline stage " << to_stage << ": the receive of micro-batch " << m
        << " is not posted before its action";
    {
      auto timed = base.Profile(OpFamily::kCommunication);
      MF_RETURN_IF_ERROR(
          Annotate(it->second.work->Wait(),
                   absl::StrCat(backward ? "gradient" : "activation", " of micro-batch ", m,
                                " from pipeline stage ", from_stage)));
    }
    Tensor t = std::move(it->second.tensor);
    incoming.erase(it);
    return t;
  };

  events_used_ = 0;
  for (size_t i = 0; i < schedule_.size(); ++i) {
    const parallel::PipelineAction& a = schedule_[i];
    model::Decoder& chunk = *chunks_[a.chunk];
    const int s = a.chunk * pp + stage();
    const model::MicroBatch& batch = batches[a.micro];
    model::StepContext ctx = base;
    ctx.grads_ready = nullptr;
    ctx.micro_batch = a.micro;
    ctx.stage = s;
    // The action on the host track of a traced step: its wait for input, its layers, its send.
    const bool forward = a.type == Type::kForward;
    FlightRecorder::Get().SetMicroBatch(a.micro);
    FlightRecorder::Get().SetPhase(forward ? "forward" : "backward");
    const TraceSpan span =
        Tracer::Get().enabled()
            ? TraceSpan(TraceTrack::kHost,
                        absl::StrCat(forward ? "forward" : "backward", " micro-batch ", a.micro),
                        {{"micro_batch", int64_t{a.micro}}, {"stage", int64_t{s}}})
            : TraceSpan();
    if (forward) {
      Tensor input, output;
      if (!chunk.stage().embedding) {
        MF_ASSIGN_OR_RETURN(input, receive(s - 1, s, a.micro, false));
      }
      model::Decoder::Saved& sv = saved[{a.chunk, a.micro}];
      MF_RETURN_IF_ERROR(RecordAction(ctx.s()));
      MF_ASSIGN_OR_RETURN(const model::ForwardStats stats,
                          chunk.Forward(ctx, batch, &sv, chunk.stage().embedding ? nullptr : &input,
                                        chunk.stage().head ? nullptr : &output));
      MF_RETURN_IF_ERROR(RecordAction(ctx.s()));
      if (chunk.stage().head) {
        MF_ASSIGN_OR_RETURN(model::BackwardSeeds head, cb.head_seeds(a.micro, stats));
        seeds[{a.chunk, a.micro}] = std::move(head);
      } else {
        MF_RETURN_IF_ERROR(send(std::move(output), s + 1, a.micro, false));
      }
      continue;
    }
    if (i == last_backward[a.chunk]) ctx.grads_ready = cb.grads_ready;
    Tensor d_output, d_input;
    if (!chunk.stage().head) {
      MF_ASSIGN_OR_RETURN(d_output, receive(s + 1, s, a.micro, true));
    }
    auto it = saved.find({a.chunk, a.micro});
    MF_CHECK(it != saved.end()) << "backward of micro-batch " << a.micro << " before its forward";
    const model::BackwardSeeds& sd =
        chunk.stage().head ? seeds.at({a.chunk, a.micro}) : cb.body_seeds;
    MF_RETURN_IF_ERROR(RecordAction(ctx.s()));
    MF_RETURN_IF_ERROR(chunk.Backward(ctx, batch, it->second, sd,
                                      chunk.stage().head ? nullptr : &d_output,
                                      chunk.stage().embedding ? nullptr : &d_input));
    MF_RETURN_IF_ERROR(RecordAction(ctx.s()));
    saved.erase(it);
    if (!chunk.stage().embedding) {
      MF_RETURN_IF_ERROR(send(std::move(d_input), s - 1, a.micro, true));
    }
  }
  MF_CHECK(next == transfers.size() && outgoing.empty() && incoming.empty())
      << "pipeline stage " << stage() << ": transfers left over after the schedule";
  auto timed = base.Profile(OpFamily::kCommunication);
  for (auto& [tensor, work] : sends) {
    MF_RETURN_IF_ERROR(Annotate(work->Wait(), "pipeline send"));
  }
  return absl::OkStatus();
}

absl::Status PipelineExecutor::RecordAction(const Stream& stream) {
  if (events_used_ == events_.size()) {
    MF_ASSIGN_OR_RETURN(Event event, Event::Create(stream.device(), /*timing=*/true));
    events_.push_back(std::move(event));
  }
  return events_[events_used_++].Record(stream);
}

absl::StatusOr<PipelineExecutor::PhaseTimes> PipelineExecutor::LastPhaseTimes() const {
  PhaseTimes times;
  // Events come in (start, end) pairs, one pair per action, in schedule order.
  size_t e = 0;
  for (const parallel::PipelineAction& a : schedule_) {
    if (e + 1 >= events_used_) break;
    MF_ASSIGN_OR_RETURN(const float ms, Event::ElapsedMs(events_[e], events_[e + 1]));
    (a.type == parallel::PipelineAction::Type::kForward ? times.forward_s : times.backward_s) +=
        ms / 1e3;
    e += 2;
  }
  return times;
}

}  // namespace moefold::train
