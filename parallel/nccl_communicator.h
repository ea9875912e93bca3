// The NCCL backend of Communicator, for GPU tensors (device pointers). The unique id is created by
// member 0 and broadcast over the group's MPI communicator. Ops are enqueued on the communicator's
// CUDA stream; a Work is a CUDA event that Wait() polls until done or its timeout, after which the
// NCCL communicator is aborted (so no rank stays stuck in the kernel) and DeadlineExceeded returned.
// bf16 sums use NCCL's native bf16 reduction. Built only with the CUDA backend.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"

namespace moefold::parallel {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`'s members: creates the NCCL communicator on `device`.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const MpiCommunicator& bootstrap,
                                                                  int device);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }

  absl::StatusOr<std::unique_ptr<Work>> AllReduce(Tensor* tensor,
                                                  const AllReduceOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatter(const Tensor& input, Tensor* output,
                                                      const ReduceScatterOptions& options) override;
  absl::StatusOr<std::unique_ptr<Work>> AllGather(const Tensor& input, Tensor* output,
                                                  const AllGatherOptions& options) override;
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

 private:
  struct Native;  // ncclComm_t and cudaStream_t, kept out of this header
  NcclCommunicator() = default;
  absl::StatusOr<std::unique_ptr<Work>> Finish(const std::string& what,
                                               std::chrono::milliseconds timeout,
                                               std::vector<Tensor> keep_alive);
  std::string Describe(absl::string_view op) const;

  std::unique_ptr<Native> native_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> world_ranks_;
};

}  // namespace moefold::parallel
