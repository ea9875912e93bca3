// Grouped linear layer for MoE experts: rows of x are grouped by expert (counts[e] consecutive rows
// for expert e) and each group is multiplied by its own weight. This is the interface the GPU's
// grouped GEMM implements; the CPU reference loops over experts.
//
//   SetGroupedGemmBackend(GroupedGemmBackend::kAuto);            // the default
//   GroupedLinearForward(x, w, counts, &y, stream);              // one launch on the GPU
//   GroupedLinearBackward(x, w, counts, d_y, &d_x, &d_w, stream);
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// How the GPU runs one projection's expert GEMMs (the CPU always loops; results agree within the
// dtype's tolerance whichever runs). Process-wide; for benchmarks and tests.
//   kLoop: one cuBLASLt matmul per expert with rows.
//   kCublasGrouped: one cublasGemmGroupedBatchedEx call, one group per expert with rows. Its type
//     table has no bf16 → f32 output, so the f32 weight gradient of bf16 inputs loops; so does any
//     call whose matrices or rows are not 16-byte aligned.
//   kBatched: when every expert has the same non-zero count (forced-balanced routing, padded
//     capacity), one strided-batched cuBLASLt matmul (batch = experts), the f32-accumulated weight
//     gradient of bf16 inputs included; other counts loop.
//   kAuto (the default): batched for equal counts; else grouped where cuBLAS takes the call and the
//     experts are too small to keep the GPU busy one at a time (on average under half a wave of
//     128×128 output tiles); else the loop.
enum class GroupedGemmBackend { kAuto, kLoop, kCublasGrouped, kBatched };
void SetGroupedGemmBackend(GroupedGemmBackend backend);
GroupedGemmBackend GetGroupedGemmBackend();

// "auto", "loop", "cublas_grouped", "batched" (the command-line names) and back;
// InvalidArgument naming the choices for anything else.
const char* GroupedGemmBackendName(GroupedGemmBackend backend);
absl::StatusOr<GroupedGemmBackend> ParseGroupedGemmBackend(absl::string_view name);

// y[rows of e] = x[rows of e] · W[e]ᵀ. x (N, in) f32, w (E, out, in) f32, counts (E) i32 summing to
// N, y (N, out) f32 (overwritten). An expert with zero rows is skipped. On the GPU x, w, y may be
// bf16 and counts may stay on the host (a GPU counts tensor is copied back: a sync).
void GroupedLinearForward(const Tensor& x, const Tensor& w, const Tensor& counts, Tensor* y,
                          Stream& stream);
// d_x[rows of e] = d_y[rows of e] · W[e] and d_w[e] += d_y[rows of e]ᵀ · x[rows of e].
// x (N, in), w (E, out, in), counts (E) i32, d_y (N, out) in x's dtype; d_x (N, in) in x's dtype,
// overwritten when non-null; d_w (E, out, in) f32 or x's dtype, accumulated (+=) when non-null (an
// expert without rows keeps its d_w).
void GroupedLinearBackward(const Tensor& x, const Tensor& w, const Tensor& counts,
                           const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream);

}  // namespace moefold::ops
