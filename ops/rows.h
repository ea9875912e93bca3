// Row movement and row-block sums for the exchanges between ranks: the token dispatcher's padding
// and regrouping (a gather of rows through an index, where −1 makes a zero row) and the local sum
// that finishes a variable-size reduce-scatter (the pieces the members sent, added in member
// order). GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): f32 or bf16 rows, and FP8
// codes for GatherRows. GatherRows moves bits (bit-exact on every device); SumBlocks adds in f32
// in block order and rounds once, so both devices give the same bits.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// out[r] = x[index[r]] for index[r] >= 0, a zero row for index[r] == −1. x (R, H) f32, bf16 or fp8,
// index (N) i32 in [−1, R), out (N, H) x's dtype, overwritten (may be a view; must not overlap x).
// The CPU checks every index first and fails naming it; a GPU kernel meeting a bad one prints it
// and traps (the index is built by the host from counts, so a bad one is a bug).
void GatherRows(const Tensor& x, const Tensor& index, Tensor* out, Stream& stream);

// out[i] = Σ_{b=0}^{n−1} blocks[b·M + i] (i < M = out.numel(), n = blocks.numel() / M), added in
// block order b = 0, 1, ... in f32 and rounded once to out's dtype. blocks (n·M) and out (M) f32 or
// bf16 of one dtype, any shapes with those element counts (n >= 1; M = 0 does nothing); out must
// not overlap blocks.
void SumBlocks(const Tensor& blocks, Tensor* out, Stream& stream);

}  // namespace moefold::ops
