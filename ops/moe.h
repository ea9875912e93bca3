// Token permutation for MoE: group the (token, choice) pairs by expert so each expert sees a
// contiguous block, and the exact reverse. Dropless keeps every pair; capacity mode keeps at most C
// pairs per expert (ComputeCapacityPermutation decides which, on the device).
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): x, out, y and their gradients f32 or
// bf16; weights and d_weights f32; the same order and counts as the CPU (a stable counting sort),
// sums in a fixed order.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// Expert ids must lie in [0, E), and `sorted` entries in [0, T·k). The CPU checks them before it
// uses them and fails with the value and its position. The GPU does not wait for the host: a
// kernel meeting a bad id or entry prints it (with token and choice for an expert id) and traps,
// and the stream and every later call on the device then fail. On the GPU the ids come from the
// router's kernels, in range by construction, so a bad one is a bug: it stops the device instead
// of costing every call a host wait.

// ids (T, k) i32 in [0, E). sorted (T·k) i32: flat pair indices t·k + j in a stable expert-major
// order (expert 0's pairs first, each expert's pairs in token order). counts (E) i32: pairs per
// expert.
void ComputePermutation(const Tensor& ids, int num_experts, Tensor* sorted, Tensor* counts,
                        Stream& stream);

// Which pairs an expert keeps when more than its capacity C chose it (docs/FORMULAS.md §4): kProbs
// its C highest routing weights (equal weights: the earlier pair, pair index t·k + j, wins),
// kPosition its C earliest pairs.
enum class DropPolicy { kProbs, kPosition };

// Capacity mode: ComputePermutation restricted to the pairs each expert keeps under `policy` with
// capacity C >= 0. ids (T, k) i32 in [0, E), weights (T, k) f32. sorted (T·k) i32: entries
// [0, N) are the kept pairs in ComputePermutation's order (expert-major, token order within an
// expert; N = Σ counts), entries [N, T·k) are −1 (N is known once counts reach the host: slice
// sorted to it). counts (E) i32 kept pairs per expert (min(demand, C)); demand (E) i32 pairs per
// expert before drops (ComputePermutation's counts; the expert load the metrics and the bias use).
// counts and demand may be views of one tensor, so one copy brings both to the host. Integer and
// comparison logic only: both devices give the same result exactly. On the GPU each expert ranks
// its own pairs (quadratic in one expert's pairs, spread over blocks), with no host wait.
void ComputeCapacityPermutation(const Tensor& ids, const Tensor& weights, int num_experts,
                                int64_t capacity, DropPolicy policy, Tensor* sorted,
                                Tensor* counts, Tensor* demand, Stream& stream);

// out[r] = x[sorted[r] / k]. x (T, H) f32, out (T·k, H) f32.
// Here and below `sorted` may also hold N < T·k pairs (e.g. after capacity drops): the permuted
// tensors then have N rows; a pair with no row adds nothing to UnpermuteTokens (zero d_weights).
void PermuteTokens(const Tensor& x, const Tensor& sorted, int k, Tensor* out, Stream& stream);
// d_x[t] = Σ over rows r of token t of d_out[r]. d_x (T, H) overwritten.
void PermuteTokensBackward(const Tensor& d_out, const Tensor& sorted, int k, Tensor* d_x,
                           Stream& stream);

// out[t] = Σ_j weights[t, j] · y[row of pair (t, j)]. y (T·k, H), weights (T, k) f32, out (T, H)
// overwritten. This also sums each token's k expert outputs.
void UnpermuteTokens(const Tensor& y, const Tensor& sorted, const Tensor& weights, Tensor* out,
                     Stream& stream);
// d_y[r] = w · d_out[t]; d_weights[t, j] = ⟨d_out[t], y[r]⟩. Both overwritten.
void UnpermuteTokensBackward(const Tensor& d_out, const Tensor& y, const Tensor& sorted,
                             const Tensor& weights, Tensor* d_y, Tensor* d_weights, Stream& stream);

// Expert load per unit of rows (e.g. per sample, for sequence-level balance statistics) without a
// host copy: counts[u][e] = #pairs (t, j) with ids[t, j] == e and (first_row + t) / unit_rows == u.
// ids (T, k) i32 in [0, E), its rows numbered from first_row >= 0 in a larger batch cut into units
// of unit_rows > 0 rows; counts (U, E) f32, overwritten (integers, exact below 2^24). Every row
// must fall in a unit of counts (checked on the host on both devices, from the shapes alone).
// Integer counting: the result does not depend on any order.
void CountExpertsPerUnit(const Tensor& ids, int64_t first_row, int64_t unit_rows, Tensor* counts,
                         Stream& stream);

}  // namespace moefold::ops
