// The NCCL backend of Communicator, for GPU tensors (device pointers). The unique id is created by
// member 0 and broadcast over the group's MPI communicator; the set-up is non-blocking (an NCCL
// communicator with blocking = 0) and polled like every op, so a member that never joins makes it
// fail after the timeout, naming the group, instead of hanging. CreateLazy defers the set-up to the
// first op, so a job pays it only for the groups it uses. Ops are enqueued on the communicator's
// own CUDA stream; a Work is a CUDA event that Wait() polls until done or its timeout, after which
// the NCCL communicator is aborted (so no rank stays stuck in the kernel), DeadlineExceeded
// returned and every later op refused. bf16/f16 sums use NCCL's native reductions (NCCL accumulates
// bf16 in its own kernels; unlike the MPI backend there is no f32 copy). fp8 reductions are
// Unimplemented; data movement is byte-wise for every dtype. Built only with the CUDA backend and
// NCCL.
//
// Ordering: every op first waits for the work queued so far on the device's default stream
// (DefaultStream(cuda:N), where the ops compute); for inputs written by another stream call
// WaitStream(producer) first. Outputs are ready for any stream after Wait().
//
// Host tensors: all-reduce, reduce-scatter, all-gather and broadcast also take CPU tensors (a GPU
// step's small host statistics: losses, expert counts, norms). They are copied to the device,
// reduced, waited for and copied back before the call returns (the Work is already complete);
// all-to-all, the variable-size gather and reduce-scatter and point-to-point take GPU tensors
// only.
//
// Variable-size ops: all_gather_v is grouped point-to-point (NCCL's all-gather needs equal
// pieces); reduce_scatter_v moves the pieces the same way into a scratch on the communicator's
// stream and adds them there in member order (ops::SumBlocks: f32 accumulator, bf16 rounded once),
// so its bits equal the MPI backend's, which NCCL's own reduce-scatter over padded pieces would not
// promise (its order follows the ring; it accumulates bf16 in bf16).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/stream.h"
#include "parallel/communicator.h"
#include "parallel/mpi_communicator.h"

namespace moefold::parallel {

struct NcclNative;  // ncclComm_t, cudaStream_t, scratch; shared with the Works in flight

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`'s members: creates the NCCL communicator on CUDA device `device`
  // (name, ranks and world ranks are `bootstrap`'s). Internal naming the failing NCCL/CUDA call; a
  // failure on one member is reported on every member; DeadlineExceeded naming the group when a
  // member does not take part within `timeout` (the half-made NCCL communicator is aborted).
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(
      MpiCommunicator& bootstrap, int device, std::chrono::milliseconds timeout = DefaultTimeout());
  // The same communicator, set up by its first op (within that op's timeout, with its errors):
  // every member's first op on it must be the matching one, as for any collective. `bootstrap` is
  // kept until then.
  static std::unique_ptr<NcclCommunicator> CreateLazy(std::unique_ptr<MpiCommunicator> bootstrap,
                                                      int device);
  ~NcclCommunicator() override;

  bool is_set_up() const;  // the NCCL communicator exists (false until a lazy one's first op)

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  int device() const { return device_; }

  // Later ops on this communicator wait for the work queued on `producer` so far (a CUDA stream).
  absl::Status WaitStream(const Stream& producer);

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
  NcclCommunicator() = default;
  // Local resources, the unique id's broadcast and the non-blocking ncclCommInitRankConfig over
  // `bootstrap`, each step within `timeout`.
  absl::Status SetUp(MpiCommunicator& bootstrap, std::chrono::milliseconds timeout);
  // Sets the communicator up if it is not (a lazy one's first op), checks it was not aborted,
  // makes `device_` current and orders the next op after the default stream's work so far.
  absl::Status Ready(absl::string_view what, std::chrono::milliseconds timeout = DefaultTimeout());
  // Runs `op` on GPU copies of host `inputs` and `outputs`, waits, copies the outputs back.
  absl::StatusOr<std::unique_ptr<Work>> Staged(
      const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs,
      const std::function<absl::StatusOr<std::unique_ptr<Work>>(const std::vector<Tensor>&,
                                                                const std::vector<Tensor*>&)>& op);
  // Records the completion event of the op just enqueued.
  absl::StatusOr<std::unique_ptr<Work>> Finish(const std::string& what,
                                               std::chrono::milliseconds timeout,
                                               std::vector<Tensor> keep_alive);
  std::string Describe(absl::string_view op) const;

  std::shared_ptr<NcclNative> native_;
  std::unique_ptr<MpiCommunicator> bootstrap_;  // a lazy communicator's, until its set-up
  absl::Status setup_status_;                   // a failed set-up fails every later op
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  std::vector<int> world_ranks_;
};

}  // namespace moefold::parallel
