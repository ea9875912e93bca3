// MoE router math (Megatron-Core conventions, ALGORITHMS §1): score functions with top-k selection,
// the load-balancing auxiliary loss and the z-loss. Logits are f32 (T, E).
// GPU: all f32, one thread per token in f64, so ids are identical to the CPU's.
#pragma once

#include <cstdint>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

enum class ScoreFunction {
  kSoftmaxPost,  // top-k on raw logits, softmax over the k chosen (weights sum to 1); default
  kSoftmaxPre,   // softmax over all E, then top-k; renormalised only if `normalize`
  kSigmoid,      // s = σ(logits); top-k on s + bias; weights = s, renormalised when `normalize` and k > 1
};

struct TopKOptions {
  int k = 2;
  ScoreFunction score = ScoreFunction::kSoftmaxPost;
  bool normalize = false;       // for kSoftmaxPre / kSigmoid: divide the k weights by their sum
  float scaling_factor = 1.0f;  // multiplies the final weights
  int num_groups = 0;           // group-limited routing when > 0: E split into num_groups groups
  int group_topk = 0;           // ... of which the best group_topk are kept
};

// logits (T, E) f32; expert_bias (E) f32 or undefined (affects selection only, kSigmoid).
// ids (T, k) i32: chosen experts, best first (ties broken by lower expert id); weights (T, k) f32.
void RouterTopKForward(const Tensor& logits, const Tensor& expert_bias, const TopKOptions& options,
                       Tensor* ids, Tensor* weights, Stream& stream);
// Gradient of the weights with respect to the logits (selection is piecewise constant).
// d_logits (T, E) is accumulated (+=).
void RouterTopKBackward(const Tensor& logits, const Tensor& ids, const Tensor& weights,
                        const TopKOptions& options, const Tensor& d_weights, Tensor* d_logits,
                        Stream& stream);

// Forced-balanced routing, for benchmarks only (Megatron-Core's moe_router_force_load_balancing,
// made exact and deterministic): row r, the (first_row + r)-th token of the aux unit's population,
// goes to experts (g·k + j) mod E for j < k with g = first_row + r, each with weight 1/k. The k
// experts of a row are distinct (k ≤ E consecutive residues), and over any T consecutive rows the
// (token, choice) pairs per expert differ by at most one (equal when T·k divides by E). The
// router's logits still run but the choice ignores them, so its weight gets no gradient from the
// LM loss. ids (T, k) i32, weights (T, k) f32.
void BalancedRouting(int64_t first_row, int num_experts, Tensor* ids, Tensor* weights,
                     Stream& stream);

// probs (T, E) = softmax over all experts of each row (used by the aux loss).
void SoftmaxForward(const Tensor& logits, Tensor* probs, Stream& stream);
// Its backward: d_logits (T, E) accumulated (+=) with p ⊙ (d_probs − ⟨d_probs, p⟩) per row.
void SoftmaxBackward(const Tensor& probs, const Tensor& d_probs, Tensor* d_logits, Stream& stream);

// Load-balancing loss = coeff · E · Σᵢ fᵢ·Pᵢ, fᵢ = counts[i] / (total_tokens · k),
// Pᵢ = Σ_t probs[t, i] / total_tokens. probs (T_local, E) f32; counts (E) f32 (already summed over
// the token population, e.g. the TP×CP group); total_tokens = size of that population.
// Returns the loss contribution of these probs (the local part of Σ_t).
float AuxLossForward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                     float coeff, Stream& stream);
// d_logits (T_local, E) accumulated (+=) with d_loss · ∂loss/∂logits through the softmax.
void AuxLossBackward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                     float coeff, float d_loss, Tensor* d_logits, Stream& stream);

// z-loss = coeff · Σ_t logsumexp(logits_t)² / total_tokens (the local part of the mean).
float ZLossForward(const Tensor& logits, float coeff, int64_t total_tokens, Stream& stream);
// d_logits accumulated (+=).
void ZLossBackward(const Tensor& logits, float coeff, int64_t total_tokens, float d_loss,
                   Tensor* d_logits, Stream& stream);

}  // namespace moefold::ops
