// Grouped linear layer for MoE experts: rows of x are grouped by expert (counts[e] consecutive rows
// for expert e) and each group is multiplied by its own weight. This is the interface the GPU's grouped
// GEMM implements; the CPU reference loops over experts.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// How the GPU runs the experts' GEMMs (the CPU always loops). kLoop: one cuBLASLt matmul per expert
// (the default); kCublasGrouped: one cublasGemmGroupedBatchedEx call for all experts (used where
// the output dtype equals the input dtype; other calls loop). Process-wide; for benchmarks/tests.
enum class GroupedGemmBackend { kLoop, kCublasGrouped };
void SetGroupedGemmBackend(GroupedGemmBackend backend);
GroupedGemmBackend GetGroupedGemmBackend();

// y[rows of e] = x[rows of e] · W[e]ᵀ. x (N, in) f32, w (E, out, in) f32, counts (E) i32 summing to
// N, y (N, out) f32 (overwritten). An expert with zero rows is skipped. On the GPU x, w, y may be
// bf16 (d_w f32 or bf16) and counts may stay on the host (a GPU counts tensor is copied back: a
// sync).
void GroupedLinearForward(const Tensor& x, const Tensor& w, const Tensor& counts, Tensor* y,
                          Stream& stream);
// d_x (N, in) overwritten when non-null; d_w (E, out, in) accumulated (+=) when non-null.
void GroupedLinearBackward(const Tensor& x, const Tensor& w, const Tensor& counts,
                           const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream);

}  // namespace moefold::ops
