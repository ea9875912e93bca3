// NCCL backend: unique id over MPI, a non-blocking set-up polled with a timeout, stream-ordered
// collectives, event-based completion with timeouts that abort the communicator; the one place NCCL
// and CUDA error codes become Status.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "ops/rows.h"
#include "parallel/communicator_checks.h"

// Non-blocking communicators (ncclConfig_t::blocking, ncclCommFinalize) arrived in NCCL 2.14.
#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "the NCCL backend needs NCCL 2.14 or newer"
#endif

namespace moefold::parallel {

namespace {
constexpr std::chrono::seconds kFinalizeTimeout{10};
}  // namespace

// Shared by the communicator and its Works in flight, so a Work outliving its communicator (or
// waiting after an abort) never touches freed handles.
struct NcclNative {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  void* scratch = nullptr;             // 4 device bytes for the barrier's all-reduce
  cudaEvent_t compute_done = nullptr;  // re-recorded before every op (Ready)
  int device = 0;
  bool aborted = false;  // after ncclCommAbort the handle is gone: no destroy, no further ops

  ~NcclNative() {
    cudaSetDevice(device);
    if (comm != nullptr && !aborted) {
      // A non-blocking communicator finalizes (flushes what was issued) before it is destroyed;
      // one that does not finish in a bounded time is aborted instead of holding up the exit.
      ncclResult_t state = ncclCommFinalize(comm);
      const auto start = std::chrono::steady_clock::now();
      while (state == ncclInProgress &&
             std::chrono::steady_clock::now() - start < kFinalizeTimeout) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) state = ncclInternalError;
      }
      if (state == ncclSuccess) {
        ncclCommDestroy(comm);
      } else {
        ncclCommAbort(comm);
      }
    }
    if (scratch != nullptr) cudaFree(scratch);
    if (compute_done != nullptr) cudaEventDestroy(compute_done);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

namespace {

absl::Status NcclStatus(ncclResult_t code, absl::string_view call) {
  if (code == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", ncclGetErrorString(code)));
}

absl::Status CudaStatus(cudaError_t code, absl::string_view call) {
  if (code == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cudaGetErrorString(code)));
}

// NCCL's element type for a reduction; fp8 has none (and no useful sum).
absl::StatusOr<ncclDataType_t> NcclReduceType(DType dtype, absl::string_view what) {
  MF_RETURN_IF_ERROR(CheckReducible(dtype, what));
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
    default:
      break;
  }
  return absl::UnimplementedError(
      absl::StrCat(what, ": NCCL reductions of ", DTypeName(dtype), " are not supported"));
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

// Empty tensors carry no storage (and so report the CPU); they are accepted anywhere.
absl::Status CheckCuda(const Tensor& t, absl::string_view what) {
  if (t.numel() > 0 && !t.device().is_cuda()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the NCCL backend takes GPU tensors, got ", t.DebugString()));
  }
  return absl::OkStatus();
}

// A tensor NCCL cannot read: non-empty host memory, staged through the device.
bool OnHost(const Tensor& t) { return t.numel() > 0 && t.device().is_cpu(); }

// The Work of an op that has already completed (host-staged ops).
class DoneWork final : public Work {
 public:
  absl::Status Wait() override { return absl::OkStatus(); }
  bool IsCompleted() override { return true; }
};

class NcclWork final : public Work {
 public:
  NcclWork(cudaEvent_t event, std::shared_ptr<NcclNative> native, std::string what,
           std::chrono::milliseconds timeout, std::vector<Tensor> keep_alive)
      : event_(event),
        native_(std::move(native)),
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
      if (native_->aborted) {
        return absl::AbortedError(
            absl::StrCat(what_, ": the NCCL communicator was aborted after an earlier timeout"));
      }
      ncclResult_t async_error = ncclSuccess;
      MF_RETURN_IF_ERROR(NcclStatus(ncclCommGetAsyncError(native_->comm, &async_error), what_));
      // A non-blocking communicator reports ncclInProgress while NCCL is busy on the host side.
      if (async_error != ncclInProgress) MF_RETURN_IF_ERROR(NcclStatus(async_error, what_));
      if (std::chrono::steady_clock::now() - start > timeout_) {
        ncclCommAbort(native_->comm);  // frees every rank's GPU from the stuck kernel
        native_->aborted = true;
        return absl::DeadlineExceededError(
            absl::StrCat(what_, " timed out after ", timeout_.count() / 1000.0,
                         " s: a peer did not join; the NCCL communicator was aborted"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  bool IsCompleted() override { return cudaEventQuery(event_) == cudaSuccess; }

 private:
  cudaEvent_t event_;
  std::shared_ptr<NcclNative> native_;
  std::string what_;
  std::chrono::milliseconds timeout_;
  std::vector<Tensor> keep_alive_;
};

// The status of NCCL call `code` on a non-blocking communicator: ncclInProgress means NCCL is
// still setting it up or enqueuing it, so this polls until it is done (its status), or
// DeadlineExceeded after `timeout` (the communicator is then aborted, so no member stays stuck).
// Every call that may return ncclInProgress goes through here: ncclCommInitRankConfig, the
// collectives and point-to-point calls, ncclGroupEnd.
absl::Status NcclEnqueued(NcclNative& n, ncclResult_t code, absl::string_view what,
                          std::chrono::milliseconds timeout) {
  if (code != ncclInProgress) return NcclStatus(code, what);
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    ncclResult_t state = ncclSuccess;
    MF_RETURN_IF_ERROR(NcclStatus(ncclCommGetAsyncError(n.comm, &state), what));
    if (state != ncclInProgress) return NcclStatus(state, what);
    if (std::chrono::steady_clock::now() - start > timeout) {
      ncclCommAbort(n.comm);
      n.aborted = true;
      return absl::DeadlineExceededError(
          absl::StrCat(what, " timed out after ", timeout.count() / 1000.0,
                       " s: a member did not take part; the NCCL communicator was aborted"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    MpiCommunicator& bootstrap, int device, std::chrono::milliseconds timeout) {
  std::unique_ptr<NcclCommunicator> c = CreateLazy(nullptr, device);
  c->name_ = bootstrap.name();
  c->rank_ = bootstrap.rank();
  c->size_ = bootstrap.size();
  c->world_ranks_ = bootstrap.world_ranks();
  MF_RETURN_IF_ERROR(c->SetUp(bootstrap, timeout));
  return c;
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::CreateLazy(
    std::unique_ptr<MpiCommunicator> bootstrap, int device) {
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->native_ = std::make_shared<NcclNative>();
  c->native_->device = device;
  c->device_ = device;
  if (bootstrap != nullptr) {
    c->name_ = bootstrap->name();
    c->rank_ = bootstrap->rank();
    c->size_ = bootstrap->size();
    c->world_ranks_ = bootstrap->world_ranks();
  }
  c->bootstrap_ = std::move(bootstrap);
  return c;
}

bool NcclCommunicator::is_set_up() const { return native_->comm != nullptr && setup_status_.ok(); }

absl::Status NcclCommunicator::SetUp(MpiCommunicator& bootstrap,
                                     std::chrono::milliseconds timeout) {
  NcclNative& n = *native_;
  const std::string where = Describe("NCCL set-up");
  // Local set-up first; then every member learns whether all succeeded before the collective
  // ncclCommInitRankConfig, so one member's failure cannot leave the others waiting in it.
  absl::Status local =
      CudaStatus(cudaSetDevice(device_), absl::StrCat("cudaSetDevice(", device_, ")"));
  if (local.ok()) {
    local = CudaStatus(cudaStreamCreateWithFlags(&n.stream, cudaStreamNonBlocking),
                       "cudaStreamCreateWithFlags");
  }
  if (local.ok()) local = CudaStatus(cudaMalloc(&n.scratch, 4), "cudaMalloc(barrier scratch)");
  if (local.ok()) {
    local = CudaStatus(cudaEventCreateWithFlags(&n.compute_done, cudaEventDisableTiming),
                       "cudaEventCreateWithFlags");
  }
  ncclUniqueId id{};
  if (local.ok() && rank_ == 0) local = NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId");
  // The MPI exchanges are the bootstrap's non-blocking ops, so they time out too.
  Tensor ok = Tensor::FromVectorI32({local.ok() ? 1 : 0}, {1});
  MF_RETURN_IF_ERROR(Annotate(
      WaitFor(bootstrap.AllReduce(&ok, {.op = ReduceOp::kMin, .timeout = timeout})), where));
  if (!local.ok()) return Annotate(local, where);
  if (ok.data<int32_t>()[0] == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": another member failed (see its error)"));
  }
  Tensor id_bytes = Tensor::Empty({static_cast<int64_t>(sizeof(id))}, DType::kU8);
  std::memcpy(id_bytes.raw_data(), &id, sizeof(id));
  MF_RETURN_IF_ERROR(
      Annotate(WaitFor(bootstrap.Broadcast(&id_bytes, {.root = 0, .timeout = timeout})),
               absl::StrCat(where, ": the unique id's broadcast")));
  std::memcpy(&id, id_bytes.raw_data(), sizeof(id));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // returns at once; NcclEnqueued polls it with the timeout
  const absl::Status ready =
      NcclEnqueued(n, ncclCommInitRankConfig(&n.comm, size_, id, rank_, &config),
                   absl::StrCat(where, ": ncclCommInitRankConfig"), timeout);
  if (!ready.ok() && n.comm != nullptr && !n.aborted) {
    ncclCommAbort(n.comm);  // a failed initialisation is never finalized, only abandoned
    n.aborted = true;
  }
  return ready;
}

NcclCommunicator::~NcclCommunicator() = default;

std::string NcclCommunicator::Describe(absl::string_view op) const {
  return absl::StrCat(op, " on group '", name_, "' (world ranks ",
                      absl::StrJoin(world_ranks_, ", "), ", NCCL)");
}

absl::Status NcclCommunicator::Ready(absl::string_view what, std::chrono::milliseconds timeout) {
  if (!setup_status_.ok()) return setup_status_;
  if (!is_set_up()) {
    if (bootstrap_ == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": the NCCL communicator was never set up"));
    }
    setup_status_ = SetUp(*bootstrap_, timeout);
    if (!setup_status_.ok()) {
      setup_status_ = Annotate(setup_status_, absl::StrCat("first op: ", what));
      return setup_status_;
    }
    bootstrap_.reset();  // its MPI communicator is no longer needed
  }
  if (native_->aborted) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": the NCCL communicator was aborted after a timeout; create a new one"));
  }
  MF_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), what));
  // Every op is ordered after the work queued so far on the device's default stream, where the
  // ops and the trainer compute, so a gradient bucket is reduced only once backward wrote it.
  auto compute = static_cast<cudaStream_t>(DefaultStream(Device::Cuda(device_)).native());
  MF_RETURN_IF_ERROR(CudaStatus(cudaEventRecord(native_->compute_done, compute), what));
  return CudaStatus(cudaStreamWaitEvent(native_->stream, native_->compute_done, 0), what);
}

absl::Status NcclCommunicator::WaitStream(const Stream& producer) {
  const std::string what = Describe("wait for stream");
  if (!producer.device().is_cuda()) return absl::OkStatus();  // host work is already done
  MF_RETURN_IF_ERROR(Ready(what));
  cudaEvent_t event;
  MF_RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), what));
  absl::Status s =
      CudaStatus(cudaEventRecord(event, static_cast<cudaStream_t>(producer.native())), what);
  if (s.ok()) s = CudaStatus(cudaStreamWaitEvent(native_->stream, event, 0), what);
  cudaEventDestroy(event);  // released once the wait is satisfied
  return s;
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Finish(const std::string& what,
                                                               std::chrono::milliseconds timeout,
                                                               std::vector<Tensor> keep_alive) {
  cudaEvent_t event;
  MF_RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), what));
  if (absl::Status s = CudaStatus(cudaEventRecord(event, native_->stream), what); !s.ok()) {
    cudaEventDestroy(event);
    return s;
  }
  return std::unique_ptr<Work>(new NcclWork(event, native_, what, timeout, std::move(keep_alive)));
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Staged(
    const std::vector<Tensor>& inputs, const std::vector<Tensor*>& outputs,
    const std::function<absl::StatusOr<std::unique_ptr<Work>>(const std::vector<Tensor>&,
                                                              const std::vector<Tensor*>&)>& op) {
  MF_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), Describe("host staging")));
  const Device gpu = Device::Cuda(device_);
  std::vector<Tensor> device_inputs, device_outputs;
  for (const Tensor& t : inputs) device_inputs.push_back(t.To(gpu));
  for (Tensor* t : outputs) device_outputs.push_back(t->To(gpu));
  std::vector<Tensor*> output_ptrs;
  for (Tensor& t : device_outputs) output_ptrs.push_back(&t);
  MF_ASSIGN_OR_RETURN(std::unique_ptr<Work> work, op(device_inputs, output_ptrs));
  MF_RETURN_IF_ERROR(work->Wait());
  for (size_t i = 0; i < outputs.size(); ++i) outputs[i]->CopyFrom(device_outputs[i]);
  return std::unique_ptr<Work>(new DoneWork());
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllReduce(Tensor* tensor,
                                                                  const AllReduceOptions& options) {
  const std::string what = Describe("all_reduce");
  if (OnHost(*tensor)) {
    return Staged({}, {tensor}, [&](const std::vector<Tensor>&, const std::vector<Tensor*>& out) {
      return AllReduce(out[0], options);
    });
  }
  MF_RETURN_IF_ERROR(CheckCuda(*tensor, what));
  MF_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclReduceType(tensor->dtype(), what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  MF_RETURN_IF_ERROR(
      NcclEnqueued(*native_,
                   ncclAllReduce(tensor->raw_data(), tensor->raw_data(), tensor->numel(), type,
                                 NcclOp(options.op), native_->comm, native_->stream),
                   what, options.timeout));
  return Finish(what, options.timeout, {*tensor});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::ReduceScatter(
    const Tensor& input, Tensor* output, const ReduceScatterOptions& options) {
  const std::string what = Describe("reduce_scatter");
  if (OnHost(input) && (OnHost(*output) || output->numel() == 0)) {
    return Staged({input}, {output},
                  [&](const std::vector<Tensor>& in, const std::vector<Tensor*>& out) {
                    return ReduceScatter(in[0], out[0], options);
                  });
  }
  MF_RETURN_IF_ERROR(CheckCuda(input, what));
  MF_RETURN_IF_ERROR(CheckCuda(*output, what));
  MF_ASSIGN_OR_RETURN(const ncclDataType_t type, NcclReduceType(input.dtype(), what));
  MF_RETURN_IF_ERROR(CheckReduceScatter(input, *output, size_, what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  MF_RETURN_IF_ERROR(
      NcclEnqueued(*native_,
                   ncclReduceScatter(input.raw_data(), output->raw_data(), output->numel(), type,
                                     NcclOp(options.op), native_->comm, native_->stream),
                   what, options.timeout));
  return Finish(what, options.timeout, {input, *output});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllGather(const Tensor& input,
                                                                  Tensor* output,
                                                                  const AllGatherOptions& options) {
  const std::string what = Describe("all_gather");
  if (OnHost(*output) && (OnHost(input) || input.numel() == 0)) {
    return Staged({input}, {output},
                  [&](const std::vector<Tensor>& in, const std::vector<Tensor*>& out) {
                    return AllGather(in[0], out[0], options);
                  });
  }
  MF_RETURN_IF_ERROR(CheckCuda(input, what));
  MF_RETURN_IF_ERROR(CheckCuda(*output, what));
  MF_RETURN_IF_ERROR(CheckAllGather(input, *output, size_, what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  MF_RETURN_IF_ERROR(
      NcclEnqueued(*native_,
                   ncclAllGather(input.raw_data(), output->raw_data(), input.nbytes(), ncclUint8,
                                 native_->comm, native_->stream),
                   what, options.timeout));
  return Finish(what, options.timeout, {input, *output});
}

namespace {

// Enqueues, inside an open NCCL group, a send of `send_bytes[peer]` bytes from `send` +
// Σ_{p<peer} send_bytes[p] to every peer and a receive of `recv_bytes[peer]` bytes into `recv` +
// Σ_{p<peer} recv_bytes[p] from every peer, skipping empty pieces. Stops at the first failure.
absl::Status EnqueuePieces(const char* send, const std::vector<int64_t>& send_bytes, char* recv,
                           const std::vector<int64_t>& recv_bytes, NcclNative& n,
                           absl::string_view what, std::chrono::milliseconds timeout) {
  int64_t send_offset = 0, recv_offset = 0;
  for (size_t peer = 0; peer < send_bytes.size(); ++peer) {
    if (send_bytes[peer] > 0) {
      MF_RETURN_IF_ERROR(NcclEnqueued(n,
                                      ncclSend(send + send_offset, send_bytes[peer], ncclUint8,
                                               static_cast<int>(peer), n.comm, n.stream),
                                      absl::StrCat(what, ": ncclSend to ", peer), timeout));
    }
    if (recv_bytes[peer] > 0) {
      MF_RETURN_IF_ERROR(NcclEnqueued(n,
                                      ncclRecv(recv + recv_offset, recv_bytes[peer], ncclUint8,
                                               static_cast<int>(peer), n.comm, n.stream),
                                      absl::StrCat(what, ": ncclRecv from ", peer), timeout));
    }
    send_offset += send_bytes[peer];
    recv_offset += recv_bytes[peer];
  }
  return absl::OkStatus();
}

// ncclGroupStart, the pieces, ncclGroupEnd: the group is always closed, even after a failed
// enqueue, so the communicator stays usable. On the non-blocking communicator every call is
// polled to its end (NcclEnqueued) within `timeout`.
absl::Status GroupedPieces(const char* send, const std::vector<int64_t>& send_bytes, char* recv,
                           const std::vector<int64_t>& recv_bytes, NcclNative& n,
                           absl::string_view what, std::chrono::milliseconds timeout) {
  MF_RETURN_IF_ERROR(NcclStatus(ncclGroupStart(), what));
  const absl::Status enqueued =
      EnqueuePieces(send, send_bytes, recv, recv_bytes, n, what, timeout);
  const absl::Status closed = NcclEnqueued(n, ncclGroupEnd(), what, timeout);
  MF_RETURN_IF_ERROR(enqueued);
  return closed;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllGatherV(
    const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
    const AllGatherOptions& options) {
  const std::string what = Describe("all_gather_v");
  MF_RETURN_IF_ERROR(CheckCuda(input, what));
  MF_RETURN_IF_ERROR(CheckCuda(*output, what));
  MF_ASSIGN_OR_RETURN(const int64_t row,
                      VariableRowBytes(input, *output, rows, rank_, size_, what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  // This member's rows go to every member (itself included); member r's arrive at its offset.
  std::vector<int64_t> send_bytes(size_, rows[rank_] * row), recv_bytes(size_);
  for (int r = 0; r < size_; ++r) recv_bytes[r] = rows[r] * row;
  // Every send reads the same input: the pieces are not consecutive, so one send per peer.
  MF_RETURN_IF_ERROR(NcclStatus(ncclGroupStart(), what));
  absl::Status enqueued;
  int64_t recv_offset = 0;
  for (int peer = 0; peer < size_ && enqueued.ok(); ++peer) {
    if (send_bytes[peer] > 0) {
      enqueued = NcclEnqueued(*native_,
                              ncclSend(input.raw_data(), send_bytes[peer], ncclUint8, peer,
                                       native_->comm, native_->stream),
                              absl::StrCat(what, ": ncclSend to ", peer), options.timeout);
    }
    if (enqueued.ok() && recv_bytes[peer] > 0) {
      enqueued = NcclEnqueued(*native_,
                              ncclRecv(static_cast<char*>(output->raw_data()) + recv_offset,
                                       recv_bytes[peer], ncclUint8, peer, native_->comm,
                                       native_->stream),
                              absl::StrCat(what, ": ncclRecv from ", peer), options.timeout);
    }
    recv_offset += recv_bytes[peer];
  }
  const absl::Status closed = NcclEnqueued(*native_, ncclGroupEnd(), what, options.timeout);
  MF_RETURN_IF_ERROR(enqueued);
  MF_RETURN_IF_ERROR(closed);
  return Finish(what, options.timeout, {input, *output});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::ReduceScatterV(
    const Tensor& input, const std::vector<int64_t>& rows, Tensor* output,
    const ReduceScatterVOptions& options) {
  const std::string what = Describe("reduce_scatter_v");
  MF_RETURN_IF_ERROR(CheckCuda(input, what));
  MF_RETURN_IF_ERROR(CheckCuda(*output, what));
  MF_RETURN_IF_ERROR(CheckSummableRows(input.dtype(), what));
  MF_ASSIGN_OR_RETURN(const int64_t row,
                      VariableRowBytes(*output, input, rows, rank_, size_, what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  const int64_t mine = rows[rank_];
  // Block r of the input goes to member r; this member's pieces arrive in member order.
  const Device gpu = Device::Cuda(device_);
  Stream comm_stream(gpu, native_->stream);
  Shape piece_shape = output->shape();
  piece_shape[0] = mine * size_;
  Tensor pieces = Tensor::Empty(piece_shape, output->dtype(), gpu);
  pieces.RecordStream(comm_stream);  // freed only after this stream's work on it
  std::vector<int64_t> send_bytes(size_), recv_bytes(size_, mine * row);
  for (int r = 0; r < size_; ++r) send_bytes[r] = rows[r] * row;
  MF_RETURN_IF_ERROR(GroupedPieces(static_cast<const char*>(input.raw_data()), send_bytes,
                                   static_cast<char*>(pieces.raw_data()), recv_bytes, *native_,
                                   what, options.timeout));
  // The sum runs on this communicator's stream, after the pieces arrived and before the Work's
  // completion event.
  if (mine > 0) {
    Tensor out = *output;
    ops::SumBlocks(pieces, &out, comm_stream);
  }
  return Finish(what, options.timeout, {input, pieces, *output});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::AllToAllV(
    const Tensor& input, const std::vector<int64_t>& send_rows, Tensor* output,
    const std::vector<int64_t>& recv_rows, const AllToAllOptions& options) {
  const std::string what = Describe("all_to_all_v");
  MF_RETURN_IF_ERROR(CheckCuda(input, what));
  MF_RETURN_IF_ERROR(CheckCuda(*output, what));
  MF_ASSIGN_OR_RETURN(const int64_t row,
                      AllToAllRowBytes(input, send_rows, *output, recv_rows, size_, what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  // NCCL has no all-to-all-v: grouped point-to-point sends and receives, skipping empty pieces.
  // The group is always closed, even after a failed enqueue, so the communicator stays usable.
  MF_RETURN_IF_ERROR(NcclStatus(ncclGroupStart(), what));
  absl::Status enqueued;
  int64_t send_offset = 0, recv_offset = 0;
  for (int peer = 0; peer < size_ && enqueued.ok(); ++peer) {
    if (send_rows[peer] > 0) {
      enqueued = NcclEnqueued(
          *native_,
          ncclSend(static_cast<const char*>(input.raw_data()) + send_offset, send_rows[peer] * row,
                   ncclUint8, peer, native_->comm, native_->stream),
          absl::StrCat(what, ": ncclSend to ", peer), options.timeout);
    }
    if (enqueued.ok() && recv_rows[peer] > 0) {
      enqueued = NcclEnqueued(
          *native_,
          ncclRecv(static_cast<char*>(output->raw_data()) + recv_offset, recv_rows[peer] * row,
                   ncclUint8, peer, native_->comm, native_->stream),
          absl::StrCat(what, ": ncclRecv from ", peer), options.timeout);
    }
    send_offset += send_rows[peer] * row;
    recv_offset += recv_rows[peer] * row;
  }
  const absl::Status closed = NcclEnqueued(*native_, ncclGroupEnd(), what, options.timeout);
  MF_RETURN_IF_ERROR(enqueued);
  MF_RETURN_IF_ERROR(closed);
  return Finish(what, options.timeout, {input, *output});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Broadcast(Tensor* tensor,
                                                                  const BroadcastOptions& options) {
  const std::string what = Describe(absl::StrCat("broadcast from ", options.root));
  if (OnHost(*tensor)) {
    return Staged({}, {tensor}, [&](const std::vector<Tensor>&, const std::vector<Tensor*>& out) {
      return Broadcast(out[0], options);
    });
  }
  MF_RETURN_IF_ERROR(CheckCuda(*tensor, what));
  MF_RETURN_IF_ERROR(CheckMember(options.root, size_, "root", what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  MF_RETURN_IF_ERROR(
      NcclEnqueued(*native_,
                   ncclBroadcast(tensor->raw_data(), tensor->raw_data(), tensor->nbytes(),
                                 ncclUint8, options.root, native_->comm, native_->stream),
                   what, options.timeout));
  return Finish(what, options.timeout, {*tensor});
}

// NCCL point-to-point has no tags: messages between two members match in issue order, so
// options.tag is ignored here (the MPI backend honours it).
absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Send(const Tensor& tensor, int peer,
                                                             const PointToPointOptions& options) {
  const std::string what = Describe(absl::StrCat("send to ", peer));
  MF_RETURN_IF_ERROR(CheckCuda(tensor, what));
  MF_RETURN_IF_ERROR(CheckMember(peer, size_, "peer", what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  MF_RETURN_IF_ERROR(NcclEnqueued(
      *native_,
      ncclSend(tensor.raw_data(), tensor.nbytes(), ncclUint8, peer, native_->comm, native_->stream),
      what, options.timeout));
  return Finish(what, options.timeout, {tensor});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Recv(Tensor* tensor, int peer,
                                                             const PointToPointOptions& options) {
  const std::string what = Describe(absl::StrCat("recv from ", peer));
  MF_RETURN_IF_ERROR(CheckCuda(*tensor, what));
  MF_RETURN_IF_ERROR(CheckMember(peer, size_, "peer", what));
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  MF_RETURN_IF_ERROR(NcclEnqueued(*native_,
                                  ncclRecv(tensor->raw_data(), tensor->nbytes(), ncclUint8, peer,
                                           native_->comm, native_->stream),
                                  what, options.timeout));
  return Finish(what, options.timeout, {*tensor});
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Barrier(const BarrierOptions& options) {
  // NCCL has no barrier: a one-element all-reduce (max, so nothing grows) on the scratch serves.
  const std::string what = Describe("barrier");
  MF_RETURN_IF_ERROR(Ready(what, options.timeout));
  MF_RETURN_IF_ERROR(NcclEnqueued(*native_,
                                  ncclAllReduce(native_->scratch, native_->scratch, 1, ncclInt32,
                                                ncclMax, native_->comm, native_->stream),
                                  what, options.timeout));
  return Finish(what, options.timeout, {});
}

}  // namespace moefold::parallel
