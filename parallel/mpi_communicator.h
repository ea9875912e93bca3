// The MPI backend of Communicator, for CPU tensors. Every op is non-blocking (MPI-3 I-collectives);
// a Work polls MPI_Test until it completes or its timeout passes. bf16/f16 reductions run in f32 on
// a temporary copy (converted back in Wait), fp8 reductions are refused; data movement (gather,
// all-to-all, broadcast, send/recv) is byte-wise and works for every dtype. The variable-size
// reduce-scatter moves every member's pieces with one all-to-all-v and adds them on completion, in
// member order (ops::SumBlocks: f32 accumulator, bf16 rounded once).
//
//   MpiCommunicator world = MpiCommunicator::World("dp");
//   MF_RETURN_IF_ERROR(WaitFor(world.AllReduce(&grads, {})));
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace moefold::parallel {

class MpiCommunicator final : public Communicator {
 public:
  // Wraps `comm` (not owned unless `owned`); errors return codes instead of aborting the job.
  MpiCommunicator(MPI_Comm comm, std::string name, bool owned = false);
  // A duplicate of MPI_COMM_WORLD (owned): its traffic never mixes with other users of the world.
  static MpiCommunicator World(std::string name = "world");
  // Collective: a duplicate (owned) with its own message space, named `name`.
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> Dup(std::string name) const;
  // Collective: members with the same colour form a group (owned), ordered by key. A member passing
  // colour MPI_UNDEFINED takes part in the split but joins no group: NotFound for it.
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> Split(int color, int key,
                                                         std::string name) const;
  ~MpiCommunicator() override;
  MpiCommunicator(MpiCommunicator&& other) noexcept;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  MPI_Comm native() const { return comm_; }

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

 private:
  // "all_reduce on group 'dp' (world ranks 0, 1)": the prefix of every message of an op.
  std::string Describe(absl::string_view op) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  bool owned_ = false;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<int> world_ranks_;
};

// Translates an MPI error code into a Status naming the call (the one place MPI errors are mapped).
absl::Status MpiStatus(int code, absl::string_view call);

}  // namespace moefold::parallel
