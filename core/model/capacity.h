// Capacity mode of the MoE layer (docs/FORMULAS.md §4): each rank lets at most
// C = ceil(T·k/E · factor) of its (token, choice) pairs reach each expert, before any
// communication. The rule is deterministic: kProbs keeps each expert's C highest routing weights
// (equal weights: the earlier pair, pair index t·k + j, wins), kPosition its C earliest pairs.
// Dropped pairs contribute nothing to the output and get no gradient; the token still passes
// through the residual connection.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace moefold::model {

enum class DropPolicy { kProbs, kPosition };

// C for `tokens` routed tokens: ceil(tokens · k / E · factor), at least 1 when tokens > 0.
int64_t ExpertCapacity(int64_t tokens, int k, int num_experts, float factor);

// ids, weights (T, k). sorted (T·k) i32 is resized to the kept pairs in expert-major, token order
// (ops::ComputePermutation's order restricted to them); counts (E) i32 kept pairs per expert.
// Returns the number of dropped pairs.
int64_t CapacityPermutation(const Tensor& ids, const Tensor& weights, int num_experts,
                            int64_t capacity, DropPolicy policy, Tensor* sorted, Tensor* counts);

}  // namespace moefold::model
