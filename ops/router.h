// MoE router math (Megatron-Core conventions): the router's logits in f32 from bf16 or f32 rows,
// score functions with top-k selection, the load-balancing auxiliary loss and the z-loss. Logits
// are f32 (T, E). GPU: the logits by a tiled f32 kernel that reads the rows in their own dtype; the
// rest one thread per token in f64, so ids are identical to the CPU's. Sums are in a fixed order.
#pragma once

#include <cstdint>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// logits (T, E) f32 = x · wᵀ with f32 math: x (T, H) f32 or bf16 (the routed rows, read in their
// own dtype: no f32 copy), w (E, H) f32 (the router's master weight). logits overwritten.
void RouterLogitsForward(const Tensor& x, const Tensor& w, Tensor* logits, Stream& stream);
// d_x (T, H) in x's dtype, accumulated: d_x += d_logits · w (f32 math, rounded once into d_x);
// d_w (E, H) f32 accumulated: d_w += d_logitsᵀ · x. d_logits (T, E) f32. Either output may be
// null (skipped). Deterministic on the GPU: every sum has a fixed order (no atomics).
void RouterLogitsBackward(const Tensor& x, const Tensor& w, const Tensor& d_logits, Tensor* d_x,
                          Tensor* d_w, Stream& stream);

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
// loss_sum (1) f32 on probs' device += the loss contribution of these probs (the local part of
// Σ_t), summed in f64 and rounded once; no host wait.
void AuxLossForward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                    float coeff, Tensor* loss_sum, Stream& stream);
// d_logits (T_local, E) accumulated (+=) with d_loss · ∂loss/∂logits through the softmax.
void AuxLossBackward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                     float coeff, float d_loss, Tensor* d_logits, Stream& stream);

// z-loss = coeff · Σ_t logsumexp(logits_t)² / total_tokens (the local part of the mean).
// loss_sum (1) f32 on logits' device += that value, summed in f64 and rounded once; no host wait.
void ZLossForward(const Tensor& logits, float coeff, int64_t total_tokens, Tensor* loss_sum,
                  Stream& stream);
// d_logits accumulated (+=).
void ZLossBackward(const Tensor& logits, float coeff, int64_t total_tokens, float d_loss,
                   Tensor* d_logits, Stream& stream);

}  // namespace moefold::ops
