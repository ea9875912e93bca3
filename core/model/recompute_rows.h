// MEMO's token-wise split in the recompute (docs/ARCHITECTURE.md §13, docs/FORMULAS.md §15): a
// swapped tensor comes back from the host with its first α·N token rows in place, and the layer's
// recompute produces only the rows [α·N, N) that were not swapped — where the op producing them is
// row-separable (each output row depends only on the same input row) and computes a row slice with
// the same bits as the whole. Elsewhere the recompute produces every row again (the same bits as
// the ones that came back).
//
//   const int64_t first = RecomputeFrom(ctx, {&saved->gate_up}, SplitsGemmRows(ctx));
//   if (first < TokenRows(...)) {
//     Tensor rows = RecomputeRowsOf(ctx, &saved->gate_up, {t, 2 * f}, ctx.act_dtype, first);
//     ... LinearRows(ctx, w, saved->x, W, first, &rows) ...  (first: GemmBlockStart)
//   }
#pragma once

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "core/model/step_context.h"
#include "core/tensor.h"

namespace moefold::model {

// The tensors of one layer's tape that the activation store placed partly (rows [0, first) from
// the host); the decoder hands it to the layer's recompute through StepContext::recompute_rows.
class RecomputeRows {
 public:
  void MarkPartial(const Tensor* t, int64_t first_missing);
  // The first token row of `t` the recompute must produce: 0 when undefined, the mark when placed
  // partly, TokenRows(t) when complete (kept, or every row came back).
  int64_t FirstMissing(const Tensor& t) const;

 private:
  std::vector<std::pair<const Tensor*, int64_t>> partial_;
};

// The first missing token row of `t` under ctx (no RecomputeRows: defined = complete).
int64_t FirstMissingRow(const StepContext& ctx, const Tensor& t);

// Whether `t` is defined with every row in place (nothing to recompute).
bool IsComplete(const StepContext& ctx, const Tensor& t);

// The first row a recompute step producing `outputs` (tensors of the same token rows) runs from:
// the smallest FirstMissingRow when `split` (the step computes row ranges exactly), else 0 when
// any output misses a row. Equal to the outputs' row count when none misses one.
int64_t RecomputeFrom(const StepContext& ctx, std::initializer_list<const Tensor*> outputs,
                      bool split);

// Where a recompute step writes rows [first, N) of one output whose full shape is `shape`: a view
// of *t's token rows (allocating *t when undefined), or scratch when *t is complete (its bits are
// the same, and a kept tensor is never written). first = 0: the full-shape tensor; first > 0: the
// token rows flattened to (N − first, ...). Counts the rows (RecomputedRowsTotal).
Tensor RecomputeRowsOf(const StepContext& ctx, Tensor* t, const Shape& shape, DType dtype,
                       int64_t first);

// Token rows [first, N) of a tensor, flattened as TokenRows counts them ((B, S, ...) by B·S).
Tensor TokenRowSlice(const Tensor& t, int64_t first);

// Whether a projection's output may be recomputed by row ranges (LinearRows): on the CPU, where
// the projections run over fixed row blocks so a range repeats the forward's very GEMM calls
// (OpenBLAS alone gives a row different bits for a different M: tests/model/linear_rows_test.cc),
// with no FP8 recipe or the delayed one (the current recipe's per-tensor scale is the amax of the
// whole input; blockwise is not proven here). cuBLASLt
// picks its algorithm (split-K included) per shape, so on CUDA the projections run as one GEMM and
// their outputs are recomputed whole (docs/DECISIONS.md).
bool SplitsGemmRows(const StepContext& ctx);

// `first` rounded down to LinearRows' row block over `rows` (a recompute step with a projection
// starts there; the rows in between come again with the bits that came back).
int64_t GemmBlockStart(int64_t first, int64_t rows);

// Token rows every recompute produced so far in this process (all layers, all steps): the tests
// count them to prove the split recomputes only the rows that were not swapped.
int64_t RecomputedRowsTotal();

}  // namespace moefold::model
