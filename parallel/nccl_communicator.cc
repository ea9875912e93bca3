// NCCL backend: unique id over MPI, stream-ordered collectives, event-based completion with timeouts;
// the one place NCCL and CUDA error codes become Status.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moefold::parallel {
namespace {

absl::Status NcclStatus(ncclResult_t code, absl::string_view call) {
  if (code == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", ncclGetErrorString(code)));
}

absl::Status CudaStatus(cudaError_t code, absl::string_view call) {
  if (code == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cudaGetErrorString(code)));
}

absl::StatusOr<ncclDataType_t> NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kBF16: return ncclBfloat16;
    case DType::kF16: return ncclFloat16;
    case DType::kI32: return ncclInt32;
    case DType::kI64: return ncclInt64;
    case DType::kU8: return ncclUint8;
    default:
      return absl::UnimplementedError(
          absl::StrCat("NCCL reductions of ", DTypeName(dtype), " are not supported"));
  }
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

absl::Status CheckCuda(const Tensor& t, absl::string_view what) {
  if (!t.device().is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the NCCL backend takes GPU tensors, got ", t.DebugString()));
  }
  return absl::OkStatus();
}

}  // namespace

struct NcclCommunicator::Native {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  bool aborted = false;
};

namespace {

class NcclWork final : public Work {
 public:
  NcclWork(cudaEvent_t event, ncclComm_t comm, bool* aborted, std::string what,
           std::chrono::milliseconds timeout, std::vector<Tensor> keep_alive)
      : event_(event),
        comm_(comm),
        aborted_(aborted),
        what_(std::move(what)),
        timeout_(timeout),
        keep_alive_(std::move(keep_alive)) {}
  ~NcclWork() override { cudaEventDestroy(event_); }

  absl::Status Wait() override {
    const auto start = std::chrono::steady_clock::now();
    while (true) {
      const cudaError_t state = cudaEventQuery(event_);
      if (state == cudaSuccess) return absl::OkStatus();
      if (state != cudaErrorNotReady) return CudaStatus(state, what_);
      ncclResult_t async_error = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async_error);
      if (async_error != ncclSuccess) return NcclStatus(async_error, what_);
      if (std::chrono::steady_clock::now() - start > timeout_) {
        if (!*aborted_) {
          ncclCommAbort(comm_);  // frees the GPU from the stuck kernel
          *aborted_ = true;
        }
        return absl::DeadlineExceededError(absl::StrCat(
            what_, " timed out after ", timeout_.count() / 1000.0,
            " s: a peer did not join; the NCCL communicator was aborted"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  bool IsCompleted() override { return cudaEventQuery(event_) == cudaSuccess; }

 private:
  cudaEvent_t event_;
  ncclComm_t comm_;
  bool* aborted_;
  std::string what_;
  std::chrono::milliseconds timeout_;
  std::vector<Tensor> keep_alive_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    const MpiCommunicator& bootstrap, int device) {
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->native_ = std::make_unique<Native>();
  c->name_ = bootstrap.name();
  c->rank_ = bootstrap.rank();
  c->size_ = bootstrap.size();
  c->world_ranks_ = bootstrap.world_ranks();
  MF_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  ncclUniqueId id;
  if (c->rank_ == 0) MF_RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"));
  MF_RETURN_IF_ERROR(MpiStatus(
      MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, bootstrap.native()), "MPI_Bcast(ncclUniqueId)"));
  MF_RETURN_IF_ERROR(
      NcclStatus(ncclCommInitRank(&c->native_->comm, c->size_, id, c->rank_), "ncclCommInitRank"));
  MF_RETURN_IF_ERROR(CudaStatus(
      cudaStreamCreateWithFlags(&c->native_->stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (!native_) return;
  if (native_->comm && !native_->aborted) ncclCommDestroy(native_->comm);
  if (native_->stream) cudaStreamDestroy(native_->stream);
}

std::string NcclCommunicator::Describe(absl::string_view op) const {
  return absl::StrCat(op, " on group '", name_, "' (world ranks ", absl::StrJoin(world_ranks_, ", "),
                      ", NCCL)");
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Finish(const std::string& what,
                                                               std::chrono::milliseconds timeout,
                                                               std::vector<Tensor> keep_alive) {
  cudaEvent_t event;
  MF_RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), what));
  MF_RETURN_IF_ERROR(CudaStatus(cudaEventRecord(event, native_->stream), what));
  return std::unique_ptr<Work>(new NcclWork(event, native_->comm, &native_->aborted, what, timeout,
                                            std::move(keep_alive)));
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllReduce(Tensor* tensor,
                                                                  const AllReduceOptions& options) {
  const std::string what = Describe("all_reduce");
  MF_RETURN_IF_ERROR(CheckCuda(*tensor, what));
  MF_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(tensor->dtype()));
  MF_RETURN_IF_ERROR(NcclStatus(ncclAllReduce(tensor->raw_data(), tensor->raw_data(),
                                              tensor->numel(), type, NcclOp(options.op),
                                              native_->comm, native_->stream),
                                what));
  return Finish(what, options.timeout, {*tensor});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::ReduceScatter(
    const Tensor& input, Tensor* output, const ReduceScatterOptions& options) {
  const std::string what = Describe("reduce_scatter");
  MF_RETURN_IF_ERROR(CheckCuda(input, what));
  MF_RETURN_IF_ERROR(CheckCuda(*output, what));
  if (input.dtype() != output->dtype() || input.numel() != output->numel() * size_) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": input ", input.DebugString(),
                                                   " must hold group size ", size_, " × output ",
                                                   output->DebugString(), " elements"));
  }
  MF_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclType(input.dtype()));
  MF_RETURN_IF_ERROR(NcclStatus(ncclReduceScatter(input.raw_data(), output->raw_data(),
                                                  output->numel(), type, NcclOp(options.op),
                                                  native_->comm, native_->stream),
                                what));
  return Finish(what, options.timeout, {input, *output});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllGather(const Tensor& input,
                                                                  Tensor* output,
                                                                  const AllGatherOptions& options) {
  const std::string what = Describe("all_gather");
  MF_RETURN_IF_ERROR(CheckCuda(input, what));
  MF_RETURN_IF_ERROR(CheckCuda(*output, what));
  if (input.dtype() != output->dtype() || output->numel() != input.numel() * size_) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": output ", output->DebugString(),
                                                   " must hold group size ", size_, " × input ",
                                                   input.DebugString(), " elements"));
  }
  MF_RETURN_IF_ERROR(NcclStatus(ncclAllGather(input.raw_data(), output->raw_data(), input.nbytes(),
                                              ncclUint8, native_->comm, native_->stream),
                                what));
  return Finish(what, options.timeout, {input, *output});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllToAllV(
    const Tensor& input, const std::vector<int64_t>& send_rows, Tensor* output,
    const std::vector<int64_t>& recv_rows, const AllToAllOptions& options) {
  const std::string what = Describe("all_to_all_v");
  MF_RETURN_IF_ERROR(CheckCuda(input, what));
  MF_RETURN_IF_ERROR(CheckCuda(*output, what));
  if (static_cast<int>(send_rows.size()) != size_ || static_cast<int>(recv_rows.size()) != size_) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": counts for ", send_rows.size(), "/",
                                                   recv_rows.size(), " of ", size_, " members"));
  }
  const int64_t row = input.rank() > 0 && input.dim(0) > 0
                          ? static_cast<int64_t>(input.nbytes()) / input.dim(0)
                          : (output->rank() > 0 && output->dim(0) > 0
                                 ? static_cast<int64_t>(output->nbytes()) / output->dim(0)
                                 : 0);
  // All-to-all-v as grouped point-to-point sends and receives (NCCL has no alltoallv).
  MF_RETURN_IF_ERROR(NcclStatus(ncclGroupStart(), what));
  int64_t send_offset = 0, recv_offset = 0;
  for (int peer = 0; peer < size_; ++peer) {
    if (send_rows[peer] > 0) {
      ncclSend(static_cast<const char*>(input.raw_data()) + send_offset, send_rows[peer] * row,
               ncclUint8, peer, native_->comm, native_->stream);
    }
    if (recv_rows[peer] > 0) {
      ncclRecv(static_cast<char*>(output->raw_data()) + recv_offset, recv_rows[peer] * row,
               ncclUint8, peer, native_->comm, native_->stream);
    }
    send_offset += send_rows[peer] * row;
    recv_offset += recv_rows[peer] * row;
  }
  MF_RETURN_IF_ERROR(NcclStatus(ncclGroupEnd(), what));
  return Finish(what, options.timeout, {input, *output});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Broadcast(Tensor* tensor,
                                                                  const BroadcastOptions& options) {
  const std::string what = Describe("broadcast");
  MF_RETURN_IF_ERROR(CheckCuda(*tensor, what));
  MF_RETURN_IF_ERROR(NcclStatus(ncclBroadcast(tensor->raw_data(), tensor->raw_data(),
                                              tensor->nbytes(), ncclUint8, options.root,
                                              native_->comm, native_->stream),
                                what));
  return Finish(what, options.timeout, {*tensor});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Send(const Tensor& tensor, int peer,
                                                             const PointToPointOptions& options) {
  const std::string what = Describe(absl::StrCat("send to ", peer));
  MF_RETURN_IF_ERROR(CheckCuda(tensor, what));
  MF_RETURN_IF_ERROR(NcclStatus(ncclSend(tensor.raw_data(), tensor.nbytes(), ncclUint8, peer,
                                         native_->comm, native_->stream),
                                what));
  return Finish(what, options.timeout, {tensor});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Recv(Tensor* tensor, int peer,
                                                             const PointToPointOptions& options) {
  const std::string what = Describe(absl::StrCat("recv from ", peer));
  MF_RETURN_IF_ERROR(CheckCuda(*tensor, what));
  MF_RETURN_IF_ERROR(NcclStatus(ncclRecv(tensor->raw_data(), tensor->nbytes(), ncclUint8, peer,
                                         native_->comm, native_->stream),
                                what));
  return Finish(what, options.timeout, {*tensor});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Barrier(const BarrierOptions& options) {
  // NCCL has no barrier: an all-reduce of one byte on the stream serves.
  const std::string what = Describe("barrier");
  void* scratch = nullptr;
  MF_RETURN_IF_ERROR(CudaStatus(cudaMallocAsync(&scratch, 1, native_->stream), what));
  MF_RETURN_IF_ERROR(NcclStatus(
      ncclAllReduce(scratch, scratch, 1, ncclUint8, ncclSum, native_->comm, native_->stream), what));
  MF_RETURN_IF_ERROR(CudaStatus(cudaFreeAsync(scratch, native_->stream), what));
  return Finish(what, options.timeout, {});
}

}  // namespace moefold::parallel
