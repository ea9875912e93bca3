// Argument checks shared by the communicator backends, so MPI and NCCL refuse the same calls with
// the same messages. `what` prefixes each message ("all_gather on group 'dp' (world ranks 0, 1)").
// Internal to parallel/: backends only.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace moefold::parallel {

// InvalidArgument when the dtypes differ.
absl::Status CheckSameDType(const Tensor& input, const Tensor& output, absl::string_view what);
// Unimplemented for fp8: a sum of fp8 values has no useful meaning.
absl::Status CheckReducible(DType dtype, absl::string_view what);
// reduce_scatter: input.numel == size · output.numel, one dtype; else InvalidArgument with the
// numbers ("input has 10 elements, expected group size 4 × output 3 = 12 (10 is not divisible by
// 4)").
absl::Status CheckReduceScatter(const Tensor& input, const Tensor& output, int size,
                                absl::string_view what);
// all_gather: output.numel == size · input.numel, one dtype.
absl::Status CheckAllGather(const Tensor& input, const Tensor& output, int size,
                            absl::string_view what);
// all_to_all_v: `size` non-negative counts each side summing to dim 0 of input / output, which have
// one dtype and equal rows (dims 1..). Returns the bytes of one row.
absl::StatusOr<int64_t> AllToAllRowBytes(const Tensor& input, const std::vector<int64_t>& send_rows,
                                         const Tensor& output,
                                         const std::vector<int64_t>& recv_rows, int size,
                                         absl::string_view what);
// all_gather_v (`gather`) / reduce_scatter_v: `size` non-negative row counts; the gathered side
// (all_gather_v's output, reduce_scatter_v's input) has Σ rows rows, the member's side
// rows[rank]; one dtype and equal rows (dims 1..). Returns the bytes of one row.
absl::StatusOr<int64_t> VariableRowBytes(const Tensor& mine, const Tensor& gathered,
                                         const std::vector<int64_t>& rows, int rank, int size,
                                         absl::string_view what);
// reduce_scatter_v sums f32 or bf16 only (ops::SumBlocks): Unimplemented otherwise.
absl::Status CheckSummableRows(DType dtype, absl::string_view what);
// 0 <= member < size, else InvalidArgument ("root 4 is not a member of a group of 4").
absl::Status CheckMember(int member, int size, absl::string_view role, absl::string_view what);

}  // namespace moefold::parallel
