// Runs one step's pipeline schedule (docs/ARCHITECTURE.md §6, RunSchedule): the forward and
// backward actions of parallel/pipeline_schedule.h over this rank's model chunks, with the
// activations sent to the next virtual stage and their gradients back to the previous one, in the
// step's activation dtype on the tensors' device. Transfers are issued in the order of
// parallel::BuildTransfers (sends as soon as their data exists, receives posted early, both
// non-blocking; an action waits only for its own input), which every pair of ranks matches in
// issue order, so NCCL (no tags, one stream) runs them as MPI (tags) does. With one stage and one
// chunk it is the plain micro-batch loop. Saved activations live only between an action's forward
// and its backward.
#pragma once

#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model/decoder.h"
#include "core/stream.h"
#include "parallel/communicator.h"
#include "parallel/pipeline_schedule.h"

namespace moefold::train {

struct PipelineCallbacks {
  // After the head chunk's forward of micro-batch m: the seeds of its backward (d_sample_loss
  // from the reweighting; the aux/z scales).
  std::function<absl::StatusOr<model::BackwardSeeds>(int m, const model::ForwardStats&)> head_seeds;
  // The aux/z scales for chunks without the head.
  model::BackwardSeeds body_seeds;
  // Called during each chunk's last backward of the step (ParameterSet index ranges).
  std::function<void(int64_t first, int64_t last)> grads_ready;
};

class PipelineExecutor {
 public:
  // chunks[c] runs virtual stage c·pp + stage. pp null = one stage. activation: the (T_x, H)
  // shape passed between stages.
  PipelineExecutor(std::vector<model::Decoder*> chunks, parallel::Communicator* pp,
                   parallel::ScheduleKind kind, Shape activation);

  // Runs the schedule over `batches` (one per micro-batch) on base's stream and activation dtype
  // (base.grads_ready is ignored: the callbacks' is set for each chunk's last backward). Status: a
  // failed collective or point-to-point exchange (naming the peer), a failing callback.
  absl::Status Run(const model::StepContext& base, const std::vector<model::MicroBatch>& batches,
                   const PipelineCallbacks& callbacks);
  const std::vector<parallel::PipelineAction>& last_schedule() const { return schedule_; }
  // Seconds the last Run's forward and backward actions took on the step's stream (events around
  // each chunk's Forward / Backward, so waits for pipeline inputs are left out; exchanges inside
  // the layers count). Read after the stream has been synchronised.
  struct PhaseTimes {
    double forward_s = 0, backward_s = 0;
  };
  absl::StatusOr<PhaseTimes> LastPhaseTimes() const;

 private:
  int pp_size() const { return pp_ == nullptr ? 1 : pp_->size(); }
  int stage() const { return pp_ == nullptr ? 0 : pp_->rank(); }

  std::vector<model::Decoder*> chunks_;
  parallel::Communicator* pp_;
  parallel::ScheduleKind kind_;
  Shape activation_;
  std::vector<parallel::PipelineAction> schedule_;
  // Start and end event of every action of the last Run (pooled across steps).
  std::vector<Event> events_;
  size_t events_used_ = 0;
  absl::Status RecordAction(const Stream& stream);
};

}  // namespace moefold::train
