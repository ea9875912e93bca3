// MPI backend: non-blocking collectives with timeouts; the one place MPI error codes become Status.
#include "parallel/mpi_communicator.h"

#include <chrono>
#include <climits>
#include <functional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ops/rows.h"
#include "parallel/communicator_checks.h"

namespace moefold::parallel {
namespace {

class MpiWork final : public Work {
 public:
  MpiWork(std::vector<MPI_Request> requests, std::string what, std::chrono::milliseconds timeout,
          std::vector<Tensor> keep_alive, std::function<void()> on_complete)
      : requests_(std::move(requests)),
        what_(std::move(what)),
        timeout_(timeout),
        keep_alive_(std::move(keep_alive)),
        on_complete_(std::move(on_complete)) {}

  // MPI forbids freeing or cancelling a pending collective request, and MPI may still write
  // into its buffers: a Work dropped while pending (after a timeout) leaks them rather than let MPI
  // write into freed memory. The job is expected to end after such a failure.
  ~MpiWork() override {
    if (Poll()) return;
    // Deliberately leaked: the buffers, and the epilogue that holds all_to_all_v's count arrays.
    new auto(std::make_pair(std::move(keep_alive_), std::move(on_complete_)));
  }

  absl::Status Wait() override {
    const auto start = std::chrono::steady_clock::now();
    while (true) {
      int flag = 0;
      const int code = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                                   MPI_STATUSES_IGNORE);
      if (code != MPI_SUCCESS) return MpiStatus(code, what_);
      if (flag) break;
      if (std::chrono::steady_clock::now() - start > timeout_) {
        // The peers never joined: report instead of hanging. The requests stay pending (a
        // collective cannot be cancelled); Wait() may be called again, else the job should end.
        return absl::DeadlineExceededError(absl::StrCat(
            what_, " timed out after ", timeout_.count() / 1000.0,
            " s: a peer did not join (it failed, hangs, or called a different collective)"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    Complete();
    return absl::OkStatus();
  }

  bool IsCompleted() override { return Poll(); }

 private:
  // One non-blocking test; on completion runs the epilogue (f32 → bf16/f16) exactly once.
  bool Poll() {
    if (done_) return true;
    int flag = 0;
    if (MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                    MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
      return false;  // Wait() reports the error
    }
    if (flag) Complete();
    return flag != 0;
  }
  void Complete() {
    if (done_) return;
    done_ = true;
    if (on_complete_) on_complete_();
  }

  std::vector<MPI_Request> requests_;
  std::string what_;
  std::chrono::milliseconds timeout_;
  std::vector<Tensor> keep_alive_;  // buffers MPI reads or writes until completion
  std::function<void()> on_complete_;
  bool done_ = false;
};

// The MPI type a reduction runs in; false for dtypes reduced through an f32 copy (bf16, f16).
bool NativeReduceType(DType dtype, MPI_Datatype* type) {
  switch (dtype) {
    case DType::kF32:
      *type = MPI_FLOAT;
      return true;
    case DType::kI32:
      *type = MPI_INT32_T;
      return true;
    case DType::kI64:
      *type = MPI_INT64_T;
      return true;
    case DType::kU8:
      *type = MPI_UINT8_T;
      return true;
    default:
      return false;
  }
}

MPI_Op ToMpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

absl::Status CheckCpu(const Tensor& t, absl::string_view op) {
  if (!t.device().is_cpu()) {
    return absl::UnimplementedError(absl::StrCat(op, ": the MPI backend takes CPU tensors, got ",
                                                 t.DebugString(),
                                                 " (GPU tensors go through NCCL or host staging)"));
  }
  return absl::OkStatus();
}

// MPI wants a valid address even for an empty buffer (an empty tensor has none).
void* Pointer(const Tensor& t) {
  static char empty[1];
  return t.raw_data() != nullptr ? t.raw_data() : empty;
}

absl::StatusOr<int> ToCount(int64_t n, absl::string_view op) {
  if (n > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", n, " elements exceed MPI's int count; use smaller buckets"));
  }
  return static_cast<int>(n);
}

}  // namespace

absl::Status MpiStatus(int code, absl::string_view call) {
  if (code == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return absl::InternalError(absl::StrCat(call, " failed: ", std::string(text, length)));
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, bool owned)
    : comm_(comm), owned_(owned), name_(std::move(name)) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  MPI_Group group, world;
  MPI_Comm_group(comm_, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  std::vector<int> local(size_);
  for (int i = 0; i < size_; ++i) local[i] = i;
  world_ranks_.resize(size_);
  MPI_Group_translate_ranks(group, size_, local.data(), world, world_ranks_.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world);
}

MpiCommunicator MpiCommunicator::World(std::string name) {
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  return MpiCommunicator(dup, std::move(name), /*owned=*/true);
}

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Dup(std::string name) const {
  MPI_Comm dup;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Comm_dup(comm_, &dup), "MPI_Comm_dup"));
  return std::make_unique<MpiCommunicator>(dup, std::move(name), /*owned=*/true);
}

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Split(int color, int key,
                                                                        std::string name) const {
  MPI_Comm split;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Comm_split(comm_, color, key, &split), "MPI_Comm_split"));
  if (split == MPI_COMM_NULL) {
    return absl::NotFoundError(absl::StrCat("split of group '", name_, "' into '", name,
                                            "': this member passed MPI_UNDEFINED and joins none"));
  }
  return std::make_unique<MpiCommunicator>(split, std::move(name), /*owned=*/true);
}

MpiCommunicator::MpiCommunicator(MpiCommunicator&& other) noexcept
    : comm_(other.comm_),
      owned_(other.owned_),
      name_(std::move(other.name_)),
      rank_(other.rank_),
      size_(other.size_),
      world_ranks_(std::move(other.world_ranks_)) {
  other.comm_ = MPI_COMM_NULL;
  other.owned_ = false;
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

std::string MpiCommunicator::Describe(absl::string_view op) const {
  return absl::StrCat(op, " on group '", name_, "' (world ranks ",
                      absl::StrJoin(world_ranks_, ", "), ")");
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::AllReduce(Tensor* tensor,
                                                                 const AllReduceOptions& options) {
  const std::string what = Describe("all_reduce");
  MF_RETURN_IF_ERROR(CheckCpu(*tensor, what));
  MF_RETURN_IF_ERROR(CheckReducible(tensor->dtype(), what));
  MF_ASSIGN_OR_RETURN(const int count, ToCount(tensor->numel(), what));
  MPI_Datatype type;
  Tensor buffer = *tensor;
  std::function<void()> done;
  if (!NativeReduceType(tensor->dtype(), &type)) {
    // bf16/f16: reduce an f32 copy, round once when the Work completes (the handle stays async).
    buffer = tensor->To(DType::kF32);
    type = MPI_FLOAT;
    Tensor target = *tensor;
    done = [buffer, target]() {
      ConvertFromF32(buffer.data<float>(), target.raw_data(), target.dtype(), target.numel());
    };
  }
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Iallreduce(MPI_IN_PLACE, buffer.raw_data(), count, type,
                                              ToMpiOp(options.op), comm_, &request),
                               what));
  return std::unique_ptr<Work>(
      new MpiWork({request}, what, options.timeout, {buffer, *tensor}, std::move(done)));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::ReduceScatter(
    const Tensor& input, Tensor* output, const ReduceScatterOptions& options) {
  const std::string what = Describe("reduce_scatter");
  MF_RETURN_IF_ERROR(CheckCpu(input, what));
  MF_RETURN_IF_ERROR(CheckCpu(*output, what));
  MF_RETURN_IF_ERROR(CheckReducible(input.dtype(), what));
  MF_RETURN_IF_ERROR(CheckReduceScatter(input, *output, size_, what));
  MF_ASSIGN_OR_RETURN(const int count, ToCount(output->numel(), what));
  MPI_Datatype type;
  Tensor in = input, out = *output;
  std::function<void()> done;
  if (!NativeReduceType(input.dtype(), &type)) {
    in = input.To(DType::kF32);
    out = Tensor::Empty(output->shape(), DType::kF32);
    type = MPI_FLOAT;
    Tensor target = *output;
    done = [out, target]() {
      ConvertFromF32(out.data<float>(), target.raw_data(), target.dtype(), target.numel());
    };
  }
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Ireduce_scatter_block(in.raw_data(), out.raw_data(), count, type,
                                                         ToMpiOp(options.op), comm_, &request),
                               what));
  return std::unique_ptr<Work>(
      new MpiWork({request}, what, options.timeout, {in, out, *output}, std::move(done)));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::AllGather(const Tensor& input,
                                                                 Tensor* output,
                                                                 const AllGatherOptions& options) {
  const std::string what = Describe("all_gather");
  MF_RETURN_IF_ERROR(CheckCpu(input, what));
  MF_RETURN_IF_ERROR(CheckCpu(*output, what));
  MF_RETURN_IF_ERROR(CheckAllGather(input, *output, size_, what));
  MF_ASSIGN_OR_RETURN(const int bytes, ToCount(static_cast<int64_t>(input.nbytes()), what));
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Iallgather(Pointer(input), bytes, MPI_BYTE, Pointer(*output),
                                              bytes, MPI_BYTE, comm_, &request),
                               what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {input, *output}, {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::AllGatherV(
    const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
    const AllGatherOptions& options) {
  const std::string what = Describe("all_gather_v");
  MF_RETURN_IF_ERROR(CheckCpu(input, what));
  MF_RETURN_IF_ERROR(CheckCpu(*output, what));
  MF_ASSIGN_OR_RETURN(const int64_t row,
                      VariableRowBytes(input, *output, rows, rank_, size_, what));
  // MPI may read the arrays until the operation completes: they travel with the Work.
  auto arrays = std::make_shared<std::vector<std::vector<int>>>(2, std::vector<int>(size_));
  std::vector<int>& counts = (*arrays)[0];
  std::vector<int>& displs = (*arrays)[1];
  int64_t offset = 0;
  for (int i = 0; i < size_; ++i) {
    MF_ASSIGN_OR_RETURN(counts[i], ToCount(rows[i] * row, what));
    MF_ASSIGN_OR_RETURN(displs[i], ToCount(offset, what));
    offset += rows[i] * row;
  }
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Iallgatherv(Pointer(input), counts[rank_], MPI_BYTE,
                                               Pointer(*output), counts.data(), displs.data(),
                                               MPI_BYTE, comm_, &request),
                               what));
  return std::unique_ptr<Work>(
      new MpiWork({request}, what, options.timeout, {input, *output}, [arrays]() {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::ReduceScatterV(
    const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
    const ReduceScatterVOptions& options) {
  const std::string what = Describe("reduce_scatter_v");
  MF_RETURN_IF_ERROR(CheckCpu(input, what));
  MF_RETURN_IF_ERROR(CheckCpu(*output, what));
  MF_RETURN_IF_ERROR(CheckSummableRows(input.dtype(), what));
  MF_ASSIGN_OR_RETURN(const int64_t row,
                      VariableRowBytes(*output, input, rows, rank_, size_, what));
  // Block r of the input goes to member r; the pieces of this member's block arrive from every
  // member in member order, and the epilogue adds them in that order (MPI's own reduce-scatter
  // would choose its order by algorithm and message size).
  const int64_t mine = rows[rank_];
  Shape piece_shape = output->shape();
  piece_shape[0] = mine * size_;
  Tensor pieces = Tensor::Empty(piece_shape, output->dtype());
  auto arrays = std::make_shared<std::vector<std::vector<int>>>(4, std::vector<int>(size_));
  std::vector<int>& send_counts = (*arrays)[0];
  std::vector<int>& send_displs = (*arrays)[1];
  std::vector<int>& recv_counts = (*arrays)[2];
  std::vector<int>& recv_displs = (*arrays)[3];
  int64_t offset = 0;
  for (int i = 0; i < size_; ++i) {
    MF_ASSIGN_OR_RETURN(send_counts[i], ToCount(rows[i] * row, what));
    MF_ASSIGN_OR_RETURN(send_displs[i], ToCount(offset, what));
    MF_ASSIGN_OR_RETURN(recv_counts[i], ToCount(mine * row, what));
    MF_ASSIGN_OR_RETURN(recv_displs[i], ToCount(i * mine * row, what));
    offset += rows[i] * row;
  }
  MPI_Request request;
  MF_RETURN_IF_ERROR(
      MpiStatus(MPI_Ialltoallv(Pointer(input), send_counts.data(), send_displs.data(), MPI_BYTE,
                               Pointer(pieces), recv_counts.data(), recv_displs.data(), MPI_BYTE,
                               comm_, &request),
                what));
  Tensor target = *output;
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout,
                                           {input, pieces, *output}, [arrays, pieces, target]() {
                                             Tensor out = target;
                                             ops::SumBlocks(pieces, &out, CpuStream());
                                           }));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::AllToAllV(
    const Tensor& input, const std::vector<int64_t>& send_rows, Tensor* output,
    const std::vector<int64_t>& recv_rows, const AllToAllOptions& options) {
  const std::string what = Describe("all_to_all_v");
  MF_RETURN_IF_ERROR(CheckCpu(input, what));
  MF_RETURN_IF_ERROR(CheckCpu(*output, what));
  MF_ASSIGN_OR_RETURN(const int64_t row,
                      AllToAllRowBytes(input, send_rows, *output, recv_rows, size_, what));
  // MPI may read the count and displacement arrays until the operation completes, so they live on
  // the heap and travel with the Work (captured by its epilogue).
  auto arrays = std::make_shared<std::vector<std::vector<int>>>(4, std::vector<int>(size_));
  std::vector<int>& send_counts = (*arrays)[0];
  std::vector<int>& send_displs = (*arrays)[1];
  std::vector<int>& recv_counts = (*arrays)[2];
  std::vector<int>& recv_displs = (*arrays)[3];
  int64_t send_offset = 0, recv_offset = 0;
  for (int i = 0; i < size_; ++i) {
    MF_ASSIGN_OR_RETURN(send_counts[i], ToCount(send_rows[i] * row, what));
    MF_ASSIGN_OR_RETURN(recv_counts[i], ToCount(recv_rows[i] * row, what));
    MF_ASSIGN_OR_RETURN(send_displs[i], ToCount(send_offset, what));
    MF_ASSIGN_OR_RETURN(recv_displs[i], ToCount(recv_offset, what));
    send_offset += send_rows[i] * row;
    recv_offset += recv_rows[i] * row;
  }
  MPI_Request request;
  MF_RETURN_IF_ERROR(
      MpiStatus(MPI_Ialltoallv(Pointer(input), send_counts.data(), send_displs.data(), MPI_BYTE,
                               Pointer(*output), recv_counts.data(), recv_displs.data(), MPI_BYTE,
                               comm_, &request),
                what));
  return std::unique_ptr<Work>(
      new MpiWork({request}, what, options.timeout, {input, *output}, [arrays]() {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::Broadcast(Tensor* tensor,
                                                                 const BroadcastOptions& options) {
  const std::string what = Describe(absl::StrCat("broadcast from ", options.root));
  MF_RETURN_IF_ERROR(CheckCpu(*tensor, what));
  MF_RETURN_IF_ERROR(CheckMember(options.root, size_, "root", what));
  MF_ASSIGN_OR_RETURN(const int bytes, ToCount(static_cast<int64_t>(tensor->nbytes()), what));
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(
      MPI_Ibcast(Pointer(*tensor), bytes, MPI_BYTE, options.root, comm_, &request), what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {*tensor}, {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::Send(const Tensor& tensor, int peer,
                                                            const PointToPointOptions& options) {
  const std::string what = Describe(absl::StrCat("send to ", peer));
  MF_RETURN_IF_ERROR(CheckCpu(tensor, what));
  MF_RETURN_IF_ERROR(CheckMember(peer, size_, "peer", what));
  MF_ASSIGN_OR_RETURN(const int bytes, ToCount(static_cast<int64_t>(tensor.nbytes()), what));
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(
      MPI_Isend(Pointer(tensor), bytes, MPI_BYTE, peer, options.tag, comm_, &request), what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {tensor}, {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::Recv(Tensor* tensor, int peer,
                                                            const PointToPointOptions& options) {
  const std::string what = Describe(absl::StrCat("recv from ", peer));
  MF_RETURN_IF_ERROR(CheckCpu(*tensor, what));
  MF_RETURN_IF_ERROR(CheckMember(peer, size_, "peer", what));
  MF_ASSIGN_OR_RETURN(const int bytes, ToCount(static_cast<int64_t>(tensor->nbytes()), what));
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(
      MPI_Irecv(Pointer(*tensor), bytes, MPI_BYTE, peer, options.tag, comm_, &request), what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {*tensor}, {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::Barrier(const BarrierOptions& options) {
  const std::string what = Describe("barrier");
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Ibarrier(comm_, &request), what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {}, {}));
}

}  // namespace moefold::parallel
