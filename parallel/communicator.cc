// Backend-independent helpers of the communicator interface and the argument checks both backends
// share (communicator_checks.h).
#include "parallel/communicator.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "parallel/communicator_checks.h"

namespace moefold::parallel {

namespace {
std::atomic<int64_t> default_timeout_ms{kDefaultTimeout.count()};
}  // namespace

std::chrono::milliseconds DefaultTimeout() {
  return std::chrono::milliseconds(default_timeout_ms.load(std::memory_order_relaxed));
}

void SetDefaultTimeout(std::chrono::milliseconds timeout) {
  default_timeout_ms.store(timeout.count(), std::memory_order_relaxed);
}

absl::Status WaitFor(absl::StatusOr<std::unique_ptr<Work>> work) {
  if (!work.ok()) return work.status();
  return (*work)->Wait();
}

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

absl::Status CheckSameDType(const Tensor& input, const Tensor& output, absl::string_view what) {
  if (input.dtype() != output.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": input ", input.DebugString(),
                                                   " and output ", output.DebugString(),
                                                   " differ in dtype"));
  }
  return absl::OkStatus();
}

absl::Status CheckReducible(DType dtype, absl::string_view what) {
  if (dtype == DType::kFp8E4M3 || dtype == DType::kFp8E5M2) {
    return absl::UnimplementedError(
        absl::StrCat(what, ": reductions of ", DTypeName(dtype), " are not supported"));
  }
  return absl::OkStatus();
}

absl::Status CheckReduceScatter(const Tensor& input, const Tensor& output, int size,
                                absl::string_view what) {
  MF_RETURN_IF_ERROR(CheckSameDType(input, output, what));
  if (input.numel() != output.numel() * size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": input has ", input.numel(), " elements, expected group size ", size,
                     " × output ", output.numel(), " = ", output.numel() * size,
                     input.numel() % size != 0
                         ? absl::StrCat(" (", input.numel(), " is not divisible by ", size, ")")
                         : ""));
  }
  return absl::OkStatus();
}

absl::Status CheckAllGather(const Tensor& input, const Tensor& output, int size,
                            absl::string_view what) {
  MF_RETURN_IF_ERROR(CheckSameDType(input, output, what));
  if (output.numel() != input.numel() * size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": output has ", output.numel(), " elements, expected group size ", size,
                     " × input ", input.numel(), " = ", input.numel() * size));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> AllToAllRowBytes(const Tensor& input, const std::vector<int64_t>& send_rows,
                                         const Tensor& output,
                                         const std::vector<int64_t>& recv_rows, int size,
                                         absl::string_view what) {
  if (static_cast<int>(send_rows.size()) != size || static_cast<int>(recv_rows.size()) != size) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", send_rows.size(), " send and ",
                                                   recv_rows.size(), " receive counts for ", size,
                                                   " members"));
  }
  MF_RETURN_IF_ERROR(CheckSameDType(input, output, what));
  if (input.rank() == 0 || output.rank() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": input ", input.DebugString(),
                                                   " and output ", output.DebugString(),
                                                   " need a row dimension (dim 0)"));
  }
  // Bytes of one row from the shape, so that empty tensors (0 rows) still state their row size.
  auto row_bytes = [](const Tensor& t) {
    int64_t n = static_cast<int64_t>(DTypeSize(t.dtype()));
    for (int d = 1; d < t.rank(); ++d) n *= t.dim(d);
    return n;
  };
  if (row_bytes(input) != row_bytes(output)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": rows of input ", input.DebugString(),
                                                   " and output ", output.DebugString(),
                                                   " differ"));
  }
  int64_t total_send = 0, total_recv = 0;
  for (int i = 0; i < size; ++i) {
    if (send_rows[i] < 0 || recv_rows[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": negative row count for member ", i,
                                                     " (send ", send_rows[i], ", receive ",
                                                     recv_rows[i], ")"));
    }
    total_send += send_rows[i];
    total_recv += recv_rows[i];
  }
  if (total_send != input.dim(0) || total_recv != output.dim(0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": send counts sum to ", total_send, " rows for input ", input.DebugString(),
        ", receive counts sum to ", total_recv, " rows for output ", output.DebugString()));
  }
  return row_bytes(input);
}

absl::StatusOr<int64_t> VariableRowBytes(const Tensor& mine, const Tensor& gathered,
                                         const std::vector<int64_t>& rows, int rank, int size,
                                         absl::string_view what) {
  if (static_cast<int>(rows.size()) != size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", rows.size(), " row counts for ", size, " members"));
  }
  MF_RETURN_IF_ERROR(CheckSameDType(mine, gathered, what));
  if (mine.rank() == 0 || gathered.rank() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", mine.DebugString(), " and ",
                                                   gathered.DebugString(),
                                                   " need a row dimension (dim 0)"));
  }
  int64_t row = static_cast<int64_t>(DTypeSize(mine.dtype()));
  int64_t gathered_row = row;
  for (int d = 1; d < mine.rank(); ++d) row *= mine.dim(d);
  for (int d = 1; d < gathered.rank(); ++d) gathered_row *= gathered.dim(d);
  if (row != gathered_row) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": rows of ", mine.DebugString(), " and ",
                                                   gathered.DebugString(), " differ"));
  }
  int64_t total = 0;
  for (int i = 0; i < size; ++i) {
    if (rows[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": negative row count ", rows[i], " for member ", i));
    }
    total += rows[i];
  }
  if (mine.dim(0) != rows[rank] || gathered.dim(0) != total) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": member ", rank, "'s ", rows[rank], " rows and ", total, " rows in all for ",
        mine.DebugString(), " and ", gathered.DebugString()));
  }
  return row;
}

absl::Status CheckSummableRows(DType dtype, absl::string_view what) {
  if (dtype == DType::kF32 || dtype == DType::kBF16) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrCat(what, ": sums f32 or bf16 rows, not ", DTypeName(dtype)));
}

absl::Status CheckMember(int member, int size, absl::string_view role, absl::string_view what) {
  if (member < 0 || member >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", role, " ", member, " is not a member of a group of ", size));
  }
  return absl::OkStatus();
}

}  // namespace moefold::parallel
