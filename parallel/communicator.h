// One interface for the collectives every parallel dimension uses, with async handles and a timeout on
// every wait: a hang becomes an error naming the group, the op and the ranks. Backends: MPI (CPU
// tensors; bf16/f16 sums done in f32) and NCCL (GPU tensors). One options struct per call (c10d style)
// so new fields change no signature.
//
//   auto work = comm.AllReduce(&grad, {.op = ReduceOp::kSum});
//   MF_RETURN_IF_ERROR(work.status());
//   MF_RETURN_IF_ERROR((*work)->Wait());
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace moefold::parallel {

enum class ReduceOp { kSum, kMax, kMin };

inline constexpr std::chrono::milliseconds kDefaultTimeout{300000};
// The timeout every op (and an NCCL set-up) gets when its options leave it at the default:
// kDefaultTimeout until SetDefaultTimeout (parallel.comm_timeout_s, set before any group exists).
std::chrono::milliseconds DefaultTimeout();
void SetDefaultTimeout(std::chrono::milliseconds timeout);

struct AllReduceOptions {
  ReduceOp op = ReduceOp::kSum;
  std::chrono::milliseconds timeout = DefaultTimeout();
};
struct ReduceScatterOptions {
  ReduceOp op = ReduceOp::kSum;
  std::chrono::milliseconds timeout = DefaultTimeout();
};
// ReduceScatterV always sums (in member order, see there).
struct ReduceScatterVOptions {
  std::chrono::milliseconds timeout = DefaultTimeout();
};
struct AllGatherOptions {
  std::chrono::milliseconds timeout = DefaultTimeout();
};
struct AllToAllOptions {
  std::chrono::milliseconds timeout = DefaultTimeout();
};
struct BroadcastOptions {
  int root = 0;  // rank within the group
  std::chrono::milliseconds timeout = DefaultTimeout();
};
struct PointToPointOptions {
  int tag = 0;
  std::chrono::milliseconds timeout = DefaultTimeout();
};
struct BarrierOptions {
  std::chrono::milliseconds timeout = DefaultTimeout();
};

// An operation in flight. Wait() blocks until it completes or its timeout passes
// (DeadlineExceeded: "all_reduce on group 'dp' (world ranks 0, 2) timed out after 30 s ...").
// Output tensors may be read only after Wait() returned OK.
class Work {
 public:
  virtual ~Work() = default;
  virtual absl::Status Wait() = 0;
  virtual bool IsCompleted() = 0;  // non-blocking poll
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;  // within this group
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;        // group kind, e.g. "dp", "ep", "world"
  virtual const std::vector<int>& world_ranks() const = 0;  // member i's world rank

  // In place over every member. Any floating dtype or i32/i64; bf16/f16 are summed in f32.
  virtual absl::StatusOr<std::unique_ptr<Work>> AllReduce(Tensor* tensor,
                                                          const AllReduceOptions& options) = 0;
  // input (size·n elements, flattened) → output (n): member r gets the reduction of chunk r.
  virtual absl::StatusOr<std::unique_ptr<Work>> ReduceScatter(
      const Tensor& input, Tensor* output, const ReduceScatterOptions& options) = 0;
  // input (n) → output (size·n): chunk r is member r's input.
  virtual absl::StatusOr<std::unique_ptr<Work>> AllGather(const Tensor& input, Tensor* output,
                                                          const AllGatherOptions& options) = 0;
  // Rows of dim 0, a count per member (rows[r] for member r, zero allowed): input holds this
  // member's rows[rank()] rows; output (Σ rows, ...) receives member r's rows at row
  // Σ_{r'<r} rows[r'] (member order). Byte-wise, every dtype.
  virtual absl::StatusOr<std::unique_ptr<Work>> AllGatherV(const Tensor& input,
                                                           const std::vector<int64_t>& rows,
                                                           Tensor* output,
                                                           const AllGatherOptions& options) = 0;
  // The adjoint of AllGatherV: input (Σ rows, ...) holds a block of rows[r] rows for every member
  // r, in member order; output (rows[rank()], ...) = Σ over members m of m's block rank(), added
  // in member order m = 0, 1, ... with an f32 accumulator and rounded once (bf16), so every
  // backend gives the same bits. f32 or bf16 (Unimplemented otherwise).
  virtual absl::StatusOr<std::unique_ptr<Work>> ReduceScatterV(
      const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
      const ReduceScatterVOptions& options) = 0;
  // Rows of dim 0: send_rows[r] consecutive rows of input go to member r; recv_rows[r] rows arrive
  // from member r, stored consecutively in output in member order. Counts may be zero.
  virtual absl::StatusOr<std::unique_ptr<Work>> AllToAllV(
      const Tensor& input, const std::vector<int64_t>& send_rows, Tensor* output,
      const std::vector<int64_t>& recv_rows, const AllToAllOptions& options) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> Broadcast(Tensor* tensor,
                                                          const BroadcastOptions& options) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> Send(const Tensor& tensor, int peer,
                                                     const PointToPointOptions& options) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> Recv(Tensor* tensor, int peer,
                                                     const PointToPointOptions& options) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> Barrier(const BarrierOptions& options) = 0;
};

// Callers pass nullptr for a group of one rank; both mean there is nothing to communicate.
inline bool IsSingleRank(const Communicator* comm) { return comm == nullptr || comm->size() == 1; }

// Runs `work` and waits for it: the blocking form most callers use.
absl::Status WaitFor(absl::StatusOr<std::unique_ptr<Work>> work);

absl::string_view ReduceOpName(ReduceOp op);

}  // namespace moefold::parallel
