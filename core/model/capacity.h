// Capacity mode of the MoE layer (docs/FORMULAS.md §4): each rank lets at most
// C = ceil(T·k/E · factor) of its (token, choice) pairs reach each expert, before any
// communication. The rule is deterministic: kProbs keeps each expert's C highest routing weights
// (equal weights: the earlier pair, pair index t·k + j, wins), kPosition its C earliest pairs
// (ops::ComputeCapacityPermutation selects them on the routing's device). Dropped pairs contribute
// nothing to the output and get no gradient; the token still passes through the residual
// connection.
#pragma once

#include <cstdint>

#include "ops/moe.h"

namespace moefold::model {

using DropPolicy = ops::DropPolicy;

// C for `tokens` routed tokens: ceil(tokens · k / E · factor), at least 1 when tokens > 0.
int64_t ExpertCapacity(int64_t tokens, int k, int num_experts, float factor);

}  // namespace moefold::model
