// MPI backend: non-blocking collectives with timeouts; the one place MPI error codes become Status.
#include "parallel/mpi_communicator.h"

#include <chrono>
#include <climits>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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

  absl::Status Wait() override {
    const auto start = std::chrono::steady_clock::now();
    while (!done_) {
      int flag = 0;
      const int code = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                                   MPI_STATUSES_IGNORE);
      if (code != MPI_SUCCESS) return MpiStatus(code, what_);
      if (flag) break;
      if (std::chrono::steady_clock::now() - start > timeout_) {
        // The peers never joined: report instead of hanging. The requests stay pending; the caller
        // ends the job (a collective cannot be cancelled).
        return absl::DeadlineExceededError(absl::StrCat(
            what_, " timed out after ", timeout_.count() / 1000.0,
            " s: a peer did not join (it failed, hangs, or called a different collective)"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    if (!done_) {
      done_ = true;
      if (on_complete_) on_complete_();
    }
    return absl::OkStatus();
  }

  bool IsCompleted() override {
    if (done_) return true;
    int flag = 0;
    MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag, MPI_STATUSES_IGNORE);
    return flag != 0;
  }

 private:
  std::vector<MPI_Request> requests_;
  std::string what_;
  std::chrono::milliseconds timeout_;
  std::vector<Tensor> keep_alive_;  // buffers MPI reads or writes until completion
  std::function<void()> on_complete_;
  bool done_ = false;
};

// The MPI type a reduction runs in, or nullopt for dtypes reduced through an f32 copy.
bool NativeReduceType(DType dtype, MPI_Datatype* type) {
  switch (dtype) {
    case DType::kF32: *type = MPI_FLOAT; return true;
    case DType::kI32: *type = MPI_INT32_T; return true;
    case DType::kI64: *type = MPI_INT64_T; return true;
    case DType::kU8: *type = MPI_UINT8_T; return true;
    default: return false;
  }
}

MPI_Op ToMpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

absl::Status CheckCpu(const Tensor& t, absl::string_view op) {
  if (!t.device().is_cpu()) {
    return absl::UnimplementedError(absl::StrCat(
        op, ": the MPI backend takes CPU tensors, got ", t.DebugString(),
        " (GPU tensors go through NCCL or host staging)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ToCount(int64_t n, absl::string_view op) {
  if (n > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": ", n, " elements exceed MPI's int count; use smaller buckets"));
  }
  return static_cast<int>(n);
}

// Reductions of bf16/f16 go through f32 copies; fp8 has no meaningful sum.
absl::Status CheckReducible(DType dtype, absl::string_view op) {
  if (dtype == DType::kFp8E4M3 || dtype == DType::kFp8E5M2) {
    return absl::UnimplementedError(
        absl::StrCat(op, ": reductions of ", DTypeName(dtype), " are not supported"));
  }
  return absl::OkStatus();
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

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Split(int color, int key,
                                                                        std::string name) const {
  MPI_Comm split;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Comm_split(comm_, color, key, &split), "MPI_Comm_split"));
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
  return absl::StrCat(op, " on group '", name_, "' (world ranks ", absl::StrJoin(world_ranks_, ", "),
                      ")");
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
    buffer = tensor->To(DType::kF32);  // bf16/f16: sum in f32, round once at the end
    type = MPI_FLOAT;
    Tensor target = *tensor;
    done = [buffer, target]() mutable {
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
  if (input.dtype() != output->dtype() || input.numel() != output->numel() * size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": input ", input.DebugString(), " must hold group size ", size_, " × output ",
        output->DebugString(), " elements of one dtype"));
  }
  MF_ASSIGN_OR_RETURN(const int count, ToCount(output->numel(), what));
  MPI_Datatype type;
  Tensor in = input, out = *output;
  std::function<void()> done;
  if (!NativeReduceType(input.dtype(), &type)) {
    in = input.To(DType::kF32);
    out = Tensor::Empty(output->shape(), DType::kF32);
    type = MPI_FLOAT;
    Tensor target = *output;
    done = [out, target]() mutable {
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
  if (input.dtype() != output->dtype() || output->numel() != input.numel() * size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": output ", output->DebugString(), " must hold group size ", size_, " × input ",
        input.DebugString(), " elements of one dtype"));
  }
  MF_ASSIGN_OR_RETURN(const int bytes, ToCount(static_cast<int64_t>(input.nbytes()), what));
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Iallgather(input.raw_data(), bytes, MPI_BYTE, output->raw_data(),
                                              bytes, MPI_BYTE, comm_, &request),
                               what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {input, *output}, {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::AllToAllV(
    const Tensor& input, const std::vector<int64_t>& send_rows, Tensor* output,
    const std::vector<int64_t>& recv_rows, const AllToAllOptions& options) {
  const std::string what = Describe("all_to_all_v");
  MF_RETURN_IF_ERROR(CheckCpu(input, what));
  MF_RETURN_IF_ERROR(CheckCpu(*output, what));
  if (static_cast<int>(send_rows.size()) != size_ || static_cast<int>(recv_rows.size()) != size_) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", send_rows.size(), " send and ",
                                                   recv_rows.size(), " receive counts for ", size_,
                                                   " members"));
  }
  auto row_bytes = [](const Tensor& t) -> int64_t {
    return t.rank() == 0 || t.dim(0) == 0 ? 0 : static_cast<int64_t>(t.nbytes()) / t.dim(0);
  };
  int64_t total_send = 0, total_recv = 0;
  for (int i = 0; i < size_; ++i) {
    total_send += send_rows[i];
    total_recv += recv_rows[i];
  }
  const int64_t in_rows = input.rank() == 0 ? 0 : input.dim(0);
  const int64_t out_rows = output->rank() == 0 ? 0 : output->dim(0);
  if (total_send != in_rows || total_recv != out_rows || input.dtype() != output->dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": send counts sum to ", total_send, " rows for input ", input.DebugString(),
        ", receive counts sum to ", total_recv, " rows for output ", output->DebugString()));
  }
  const int64_t row = std::max(row_bytes(input), row_bytes(*output));
  if (in_rows > 0 && out_rows > 0 && row_bytes(input) != row_bytes(*output)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": input and output rows differ: ",
                                                   input.DebugString(), " vs ",
                                                   output->DebugString()));
  }
  // MPI may read the count and displacement arrays until the operation completes, so they live on
  // the heap and travel with the Work.
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
  // MPI needs valid pointers even for empty buffers.
  static char empty_buffer[1];
  void* send = input.raw_data() ? input.raw_data() : empty_buffer;
  void* recv = output->raw_data() ? output->raw_data() : empty_buffer;
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(
      MPI_Ialltoallv(send, send_counts.data(), send_displs.data(), MPI_BYTE, recv,
                     recv_counts.data(), recv_displs.data(), MPI_BYTE, comm_, &request),
      what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {input, *output},
                                           [arrays]() {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::Broadcast(Tensor* tensor,
                                                                 const BroadcastOptions& options) {
  const std::string what = Describe(absl::StrCat("broadcast from ", options.root));
  MF_RETURN_IF_ERROR(CheckCpu(*tensor, what));
  if (options.root < 0 || options.root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": root ", options.root, " is not a member of ", size_));
  }
  MF_ASSIGN_OR_RETURN(const int bytes, ToCount(static_cast<int64_t>(tensor->nbytes()), what));
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(
      MPI_Ibcast(tensor->raw_data(), bytes, MPI_BYTE, options.root, comm_, &request), what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {*tensor}, {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::Send(const Tensor& tensor, int peer,
                                                            const PointToPointOptions& options) {
  const std::string what = Describe(absl::StrCat("send to ", peer));
  MF_RETURN_IF_ERROR(CheckCpu(tensor, what));
  if (peer < 0 || peer >= size_) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no member ", peer, " of ", size_));
  }
  MF_ASSIGN_OR_RETURN(const int bytes, ToCount(static_cast<int64_t>(tensor.nbytes()), what));
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(
      MPI_Isend(tensor.raw_data(), bytes, MPI_BYTE, peer, options.tag, comm_, &request), what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {tensor}, {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::Recv(Tensor* tensor, int peer,
                                                            const PointToPointOptions& options) {
  const std::string what = Describe(absl::StrCat("recv from ", peer));
  MF_RETURN_IF_ERROR(CheckCpu(*tensor, what));
  if (peer < 0 || peer >= size_) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no member ", peer, " of ", size_));
  }
  MF_ASSIGN_OR_RETURN(const int bytes, ToCount(static_cast<int64_t>(tensor->nbytes()), what));
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(
      MPI_Irecv(tensor->raw_data(), bytes, MPI_BYTE, peer, options.tag, comm_, &request), what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {*tensor}, {}));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::Barrier(const BarrierOptions& options) {
  const std::string what = Describe("barrier");
  MPI_Request request;
  MF_RETURN_IF_ERROR(MpiStatus(MPI_Ibarrier(comm_, &request), what));
  return std::unique_ptr<Work>(new MpiWork({request}, what, options.timeout, {}, {}));
}

}  // namespace moefold::parallel
