// Cross entropy per token; the model averages tokens per sample so reweighting sees per-sample
// losses. GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): logits and d_logits f32 or
// bf16 (d_logits may alias logits); losses, lse and partials f32. The softmax is never stored:
// forward reads each row once, backward writes the gradient directly. With the vocabulary split
// over ranks (tensor parallelism) each rank computes its shard's partials, the ranks exchange them
// (one all-gather), and every rank merges the same partials into the same losses.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// logits (N, V) f32, targets (N) i32 with -1 = ignore (loss 0, no gradient), else 0 <= t < V.
// token_losses (N) f32 = logsumexp(logits) - logits[target]; lse (N) f32 saved for backward.
void CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor* token_losses,
                         Tensor* lse, Stream& stream);
// d_logits[n] = d_token_losses[n] · (softmax(logits[n]) - onehot(target)); overwritten.
void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                          const Tensor& d_token_losses, Tensor* d_logits, Stream& stream);

// Partials of one vocabulary shard: logits (N, V_shard) f32 or bf16 hold the columns of ids
// [first_id, first_id + V_shard); targets (N) i32 global ids, -1 = ignore (a target below -1 is an
// error; one outside the shard is another shard's). partials (3, N) f32 overwritten, per row n:
//   partials[0][n] = m_n = max_v logits[n][v]                 (-inf when V_shard = 0)
//   partials[1][n] = Σ_v exp(logits[n][v] − m_n)               (0 when V_shard = 0)
//   partials[2][n] = logits[n][targets[n] − first_id] if that target is in the shard, else 0.
void CrossEntropyShardPartials(const Tensor& logits, const Tensor& targets, int64_t first_id,
                               Tensor* partials, Stream& stream);
// The merge of the partials (R, 3, N) f32 of R shards that together cover the vocabulary once (in
// any order), per row n with M = max_r m_r:
//   lse[n] = M + log Σ_r s_r·exp(m_r − M),  token_losses[n] = lse[n] − Σ_r target logit_r
// (0 where targets[n] = -1, as CrossEntropyForward). targets (N) i32; token_losses, lse (N) f32.
// Every rank that merges the same partials gets the same values.
void CrossEntropyFromShardPartials(const Tensor& partials, const Tensor& targets,
                                   Tensor* token_losses, Tensor* lse, Stream& stream);
// The backward on one shard: d_logits[n][v] = d_token_losses[n] · (exp(logits[n][v] − lse[n]) −
// [v = targets[n] − first_id]), overwritten; rows with target -1 are zero. logits and d_logits
// (N, V_shard) in one dtype (d_logits may alias logits); lse (the merged one) and d_token_losses
// (N) f32.
void CrossEntropyShardBackward(const Tensor& logits, const Tensor& targets, int64_t first_id,
                               const Tensor& lse, const Tensor& d_token_losses, Tensor* d_logits,
                               Stream& stream);

// Per-sample loss sums on the loss's device (no host copy). token_losses (B·S) f32; targets (B, S)
// or (B·S) i32, -1 = ignored; sums (2, B) f32 overwritten: sums[0][b] = Σ_s token_losses[b·S + s]
// over the tokens of sample b with a target, sums[1][b] = their count. B is sums' second dim.
void SampleLossSums(const Tensor& token_losses, const Tensor& targets, Tensor* sums,
                    Stream& stream);
// total (1) f32 += Σ_b (count_b > 0 ? sum_b / count_b : 0) for sums (2, B) from SampleLossSums:
// the sum of the per-sample mean losses, added in b order in f32 (identical on CPU and GPU), so a
// step can accumulate its loss over micro-batches on the device.
void AccumulateSampleMeans(const Tensor& sums, Tensor* total, Stream& stream);

}  // namespace moefold::ops
