// Host staging around a host-only communicator: copy in before the op, copy out in Wait().
#include "parallel/host_staged_communicator.h"

#include <utility>

namespace moefold::parallel {
namespace {

// The backend's work plus what Wait() copies back (device tensor ← host buffer) and the host
// buffers the backend reads or writes until then (kept alive by this object).
class StagedWork final : public Work {
 public:
  StagedWork(std::unique_ptr<Work> inner, std::vector<std::pair<Tensor, Tensor>> copy_back,
             std::vector<Tensor> keep_alive)
      : inner_(std::move(inner)),
        copy_back_(std::move(copy_back)),
        keep_alive_(std::move(keep_alive)) {}

  absl::Status Wait() override {
    MF_RETURN_IF_ERROR(inner_->Wait());
    for (auto& [target, host] : copy_back_) target.CopyFrom(host);
    copy_back_.clear();
    return absl::OkStatus();
  }
  bool IsCompleted() override { return inner_->IsCompleted(); }

 private:
  std::unique_ptr<Work> inner_;
  std::vector<std::pair<Tensor, Tensor>> copy_back_;
  std::vector<Tensor> keep_alive_;
};

// Assembles the StagedWork of one call: which tensors were staged and which go back.
struct Staging {
  std::vector<std::pair<Tensor, Tensor>> copy_back;
  std::vector<Tensor> keep_alive;

  absl::StatusOr<std::unique_ptr<Work>> Finish(absl::StatusOr<std::unique_ptr<Work>> inner) {
    MF_RETURN_IF_ERROR(inner.status());
    return std::unique_ptr<Work>(
        new StagedWork(std::move(*inner), std::move(copy_back), std::move(keep_alive)));
  }
};

}  // namespace

HostStagedCommunicator::HostStagedCommunicator(std::unique_ptr<Communicator> inner,
                                               bool stage_host_tensors)
    : inner_(std::move(inner)), stage_host_tensors_(stage_host_tensors) {
  MF_CHECK(inner_ != nullptr);
}

bool HostStagedCommunicator::Stages(const Tensor& t) const {
  return t.numel() > 0 && (t.device().is_cuda() || stage_host_tensors_);
}

Tensor HostStagedCommunicator::Staged(const Tensor& t, bool copy_in) const {
  // An empty GPU tensor (e.g. the (0, d) output of an all-to-all-v that receives no rows) has
  // nothing to copy, but the host-only backend refuses any non-CPU tensor, so it gets an empty host
  // tensor of the same shape and dtype (Stages() is false: nothing is copied back).
  if (t.numel() == 0 && !t.device().is_cpu()) return Tensor::Empty(t.shape(), t.dtype());
  if (!Stages(t)) return t;
  // Page-locked for GPU tensors (fast, and what cudaMemcpy wants); CPU tensors only in tests.
  Tensor host = t.device().is_cuda() ? Tensor::EmptyPinned(t.shape(), t.dtype())
                                     : Tensor::Empty(t.shape(), t.dtype());
  if (copy_in) host.CopyFrom(t);
  return host;
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::AllReduce(
    Tensor* tensor, const AllReduceOptions& options) {
  Staging s;
  Tensor host = Staged(*tensor, /*copy_in=*/true);
  if (Stages(*tensor)) s.copy_back.emplace_back(*tensor, host);
  return s.Finish(inner_->AllReduce(&host, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::ReduceScatter(
    const Tensor& input, Tensor* output, const ReduceScatterOptions& options) {
  Staging s;
  Tensor in = Staged(input, true), out = Staged(*output, false);
  s.keep_alive.push_back(in);
  if (Stages(*output)) s.copy_back.emplace_back(*output, out);
  return s.Finish(inner_->ReduceScatter(in, &out, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::AllGather(
    const Tensor& input, Tensor* output, const AllGatherOptions& options) {
  Staging s;
  Tensor in = Staged(input, true), out = Staged(*output, false);
  s.keep_alive.push_back(in);
  if (Stages(*output)) s.copy_back.emplace_back(*output, out);
  return s.Finish(inner_->AllGather(in, &out, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::AllGatherV(
    const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
    const AllGatherOptions& options) {
  Staging s;
  Tensor in = Staged(input, true), out = Staged(*output, false);
  s.keep_alive.push_back(in);
  if (Stages(*output)) s.copy_back.emplace_back(*output, out);
  return s.Finish(inner_->AllGatherV(in, rows, &out, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::ReduceScatterV(
    const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
    const ReduceScatterVOptions& options) {
  Staging s;
  Tensor in = Staged(input, true), out = Staged(*output, false);
  s.keep_alive.push_back(in);
  if (Stages(*output)) s.copy_back.emplace_back(*output, out);
  return s.Finish(inner_->ReduceScatterV(in, rows, &out, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::AllToAllV(
    const Tensor& input, const std::vector<int64_t>& send_rows, Tensor* output,
    const std::vector<int64_t>& recv_rows, const AllToAllOptions& options) {
  Staging s;
  Tensor in = Staged(input, true), out = Staged(*output, false);
  s.keep_alive.push_back(in);
  if (Stages(*output)) s.copy_back.emplace_back(*output, out);
  return s.Finish(inner_->AllToAllV(in, send_rows, &out, recv_rows, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::Broadcast(
    Tensor* tensor, const BroadcastOptions& options) {
  Staging s;
  // Every member copies in: the root's values are the payload, the others' are overwritten.
  Tensor host = Staged(*tensor, true);
  if (Stages(*tensor)) s.copy_back.emplace_back(*tensor, host);
  return s.Finish(inner_->Broadcast(&host, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::Send(
    const Tensor& tensor, int peer, const PointToPointOptions& options) {
  Staging s;
  Tensor host = Staged(tensor, true);
  s.keep_alive.push_back(host);
  return s.Finish(inner_->Send(host, peer, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::Recv(
    Tensor* tensor, int peer, const PointToPointOptions& options) {
  Staging s;
  Tensor host = Staged(*tensor, false);
  if (Stages(*tensor)) s.copy_back.emplace_back(*tensor, host);
  return s.Finish(inner_->Recv(&host, peer, options));
}

absl::StatusOr<std::unique_ptr<Work>> HostStagedCommunicator::Barrier(
    const BarrierOptions& options) {
  return inner_->Barrier(options);
}

}  // namespace moefold::parallel
