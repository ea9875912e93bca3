// Collectives over a host-only backend (MPI) for tensors of any device: a GPU tensor is copied to a
// page-locked host buffer before the op starts and, for outputs, copied back when the op is waited
// for. This is the fallback for several ranks that share one GPU (NCCL holds one rank
// per GPU), so the multi-rank tests also run on a one-GPU machine; with a GPU per rank, use NCCL.
//
//   auto staged = std::make_unique<HostStagedCommunicator>(std::move(mpi_comm));
//   MF_RETURN_IF_ERROR(WaitFor(staged->AllReduce(&gpu_grad, {})));  // gpu_grad updated on return
//
// Ordering: the device-to-host copy runs on the tensor's device's default stream and waits for
// it, so the caller's GPU work producing an input must be on that stream (the trainer's compute
// stream) or synchronised before the call. Outputs are written back during Wait(), on the same
// stream, synchronously; IsCompleted() reports the host operation only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace moefold::parallel {

class HostStagedCommunicator final : public Communicator {
 public:
  // `stage_host_tensors` stages CPU tensors too (through ordinary host memory), so tests exercise
  // the whole staging path on a machine without a GPU.
  explicit HostStagedCommunicator(std::unique_ptr<Communicator> inner,
                                  bool stage_host_tensors = false);

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

  Communicator& inner() { return *inner_; }

 private:
  bool Stages(const Tensor& t) const;
  // The tensor the backend sees: `t` itself, or a host copy of it (`copy_in`) or an uninitialised
  // host buffer of its shape (an output).
  Tensor Staged(const Tensor& t, bool copy_in) const;

  std::unique_ptr<Communicator> inner_;
  bool stage_host_tensors_;
};

}  // namespace moefold::parallel
