// Schedule execution with point-to-point activations and gradients.
#include "core/train/pipeline_executor.h"

#include <map>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/stream.h"

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
  // Message tags: the receiving virtual stage and micro-batch, forward and backward apart.
  auto tag = [&](int m, int to_stage, bool backward) {
    return 2 * (m * stages + to_stage) + (backward ? 1 : 0);
  };
  auto rank_of = [&](int virtual_stage) { return virtual_stage % pp; };

  std::map<std::pair<int, int>, model::Decoder::Saved> saved;  // (chunk, micro)
  std::map<std::pair<int, int>, model::BackwardSeeds> seeds;
  std::vector<std::pair<Tensor, std::unique_ptr<parallel::Work>>> sends;
  auto send = [&](const Tensor& t, int to_stage, int m, bool backward) -> absl::Status {
    MF_ASSIGN_OR_RETURN(auto work, pp_->Send(t, rank_of(to_stage),
                                             {.tag = tag(m, to_stage, backward)}));
    sends.emplace_back(t, std::move(work));
    return absl::OkStatus();
  };
  auto receive = [&](int from_stage, int to_stage, int m, bool backward) -> absl::StatusOr<Tensor> {
    Tensor t = base.Act(activation_);
    MF_RETURN_IF_ERROR(Annotate(
        parallel::WaitFor(pp_->Recv(&t, rank_of(from_stage), {.tag = tag(m, to_stage, backward)})),
        absl::StrCat(backward ? "gradient" : "activation", " of micro-batch ", m,
                     " from pipeline stage ", from_stage)));
    return t;
  };

  for (size_t i = 0; i < schedule_.size(); ++i) {
    const parallel::PipelineAction& a = schedule_[i];
    model::Decoder& chunk = *chunks_[a.chunk];
    const int s = a.chunk * pp + stage();
    const model::MicroBatch& batch = batches[a.micro];
    model::StepContext ctx = base;
    ctx.grads_ready = nullptr;
    if (a.type == Type::kForward) {
      Tensor input, output;
      if (!chunk.stage().embedding) {
        MF_ASSIGN_OR_RETURN(input, receive(s - 1, s, a.micro, false));
      }
      model::Decoder::Saved& sv = saved[{a.chunk, a.micro}];
      MF_ASSIGN_OR_RETURN(const model::ForwardStats stats,
                          chunk.Forward(ctx, batch, &sv, chunk.stage().embedding ? nullptr : &input,
                                        chunk.stage().head ? nullptr : &output));
      if (chunk.stage().head) {
        MF_ASSIGN_OR_RETURN(model::BackwardSeeds head, cb.head_seeds(a.micro, stats));
        seeds[{a.chunk, a.micro}] = std::move(head);
      } else {
        MF_RETURN_IF_ERROR(send(output, s + 1, a.micro, false));
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
    MF_RETURN_IF_ERROR(chunk.Backward(ctx, batch, it->second, sd,
                                      chunk.stage().head ? nullptr : &d_output,
                                      chunk.stage().embedding ? nullptr : &d_input));
    saved.erase(it);
    if (!chunk.stage().embedding) MF_RETURN_IF_ERROR(send(d_input, s - 1, a.micro, true));
  }
  for (auto& [tensor, work] : sends) {
    MF_RETURN_IF_ERROR(Annotate(work->Wait(), "pipeline send"));
  }
  return absl::OkStatus();
}

}  // namespace moefold::train
