// Global gradient-norm clipping (as PyTorch's clip_grad_norm_ with the L2 norm), built from pieces
// a multi-rank version reuses: each rank sums the squares of the gradient shards it owns once
// (SumSquares), the sums of all reduction groups are added (an all-reduce later) before the single
// sqrt, and every rank scales its shards by the same ClipScale.
//
//   double norm = ClipGradNorm(grads, /*max_norm=*/1.0);   // pre-clip norm, for logging/anomalies
#pragma once

#include <vector>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::optim {

// Σ over tensors of Σ x² (each f32, any shape), accumulated in f64 by ops::SumOfSquares. Tensors
// are visited in the given order, so the result is deterministic for a fixed list. Null entries and
// undefined tensors are skipped.
double SumSquares(const std::vector<const Tensor*>& grads, Stream& stream = CpuStream());

// sqrt(SumSquares(grads)): the global L2 norm of this rank's gradients.
double GlobalGradNorm(const std::vector<const Tensor*>& grads, Stream& stream = CpuStream());

// The factor the gradients are multiplied by, from the global (already reduced) norm:
//   max_norm / (norm + 1e-6)  when norm > max_norm (the 1e-6 as PyTorch),  else 1.
// Returns 1 (no clipping) when max_norm <= 0 (clipping off) or when norm is NaN/Inf: scaling by 0
// or NaN would destroy the gradients the anomaly policy is about to skip anyway.
double ClipScale(double norm, double max_norm);

// x *= scale for every gradient (f32; null/undefined entries skipped). Also the place where the
// reweighting's deferred normaliser is applied (scale = 1/Z).
void ScaleGrads(const std::vector<Tensor*>& grads, float scale, Stream& stream = CpuStream());

// Single-rank clip_grad_norm_: norm = GlobalGradNorm(grads); grads *= ClipScale(norm, max_norm)
// (not touched at all when the scale is 1, so clipping below the threshold is bit-exact no-op).
// Returns the pre-clip norm.
double ClipGradNorm(const std::vector<Tensor*>& grads, double max_norm,
                    Stream& stream = CpuStream());

}  // namespace moefold::optim
