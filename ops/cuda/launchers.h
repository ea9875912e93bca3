// The CUDA launchers behind the public ops (internal to ops/; no CUDA types, no templates). Each
// has the signature of the op it implements; the public function in ops/cpu/*.cc calls it when the
// first tensor argument lives on a GPU. Only defined in CUDA builds.
//
// Dtypes on the GPU (bf16 storage, f32 accumulation; docs/ARCHITECTURE.md §3): "activation" tensors
// of one call (x, y, q/k/v, logits, gate/up, tokens and their gradients) are all f32 or all bf16;
// statistics (rstd, lse, losses, router logits/weights/probs), accumulated parameter gradients
// (d_w, d_table) and the optimizer state are f32. Every tensor must be on the stream's GPU, which
// is the calling thread's current device.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/fp8.h"
#include "ops/fp8_gemm.h"
#include "ops/fp8_fused.h"
#include "ops/moe.h"
#include "ops/permute_quantize.h"
#include "ops/quant.h"
#include "ops/router.h"
#include "ops/spam.h"

namespace moefold::ops::cuda {

// gemm.cc (cuBLASLt). a, b: f32 or bf16 (same); c: f32, or bf16 when a and b are.
void Gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, float alpha, float beta,
          Tensor* c, Stream& stream);
// y = x·Wᵀ + bias through cuBLASLt's bias epilogue; bias (out) in y's dtype.
void LinearBiasForward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor* y,
                       Stream& stream);

// grouped_gemm.cc. counts on the host (no synchronisation) or the GPU (copied back first).
void GroupedLinearForward(const Tensor& x, const Tensor& w, const Tensor& counts, Tensor* y,
                          Stream& stream);
void GroupedLinearBackward(const Tensor& x, const Tensor& w, const Tensor& counts,
                           const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream);

// embedding.cu. table (shard) and out share the activation dtype; d_table (d_shard) f32.
void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor* out, Stream& stream);
void EmbeddingBackward(const Tensor& ids, const Tensor& d_out, Tensor* d_table, Stream& stream);
void EmbeddingShardForward(const Tensor& ids, const Tensor& shard, int64_t first_id, Tensor* out,
                           Stream& stream);
void EmbeddingShardBackward(const Tensor& ids, const Tensor& d_out, int64_t first_id,
                            Tensor* d_shard, Stream& stream);

// norm.cu. w in the activation dtype; rstd and d_w f32.
void RmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y, Tensor* rstd,
                    Stream& stream);
void AddRmsNormForward(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                       Tensor* sum, Tensor* y, Tensor* rstd, Stream& stream);
void RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& d_y,
                     Tensor* d_x, Tensor* d_w, Stream& stream);
void RmsNormBackwardAccumulate(const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream);

// rope.cu. table (P, D/2, 2) f32; positions outside [0, P) trap the kernel.
void RopeForward(const Tensor& x, const Tensor& positions, const Tensor& table, Tensor* y,
                 Stream& stream);
void RopeBackward(const Tensor& d_y, const Tensor& positions, const Tensor& table, Tensor* d_x,
                  Stream& stream);
void QkvRopeForward(const Tensor& qkv, const Tensor& positions, const Tensor& table, Tensor* q,
                    Tensor* k, Tensor* v, Stream& stream);
void QkvRopeBackward(const Tensor& d_q, const Tensor& d_k, const Tensor& d_v,
                     const Tensor& positions, const Tensor& table, Tensor* d_qkv, Stream& stream);

// attention.cc: cuDNN's fused SDPA (attention_cudnn.cc) for bf16 with head dim 64 or 128, else
// the flash kernels (attention_flash.cu) for bf16 with head dim 64 or 128 and S % 64 == 0, else the
// row kernels (attention_rows.cu), as GetAttentionBackend() selects.
void AttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                      Tensor* lse, Stream& stream);
void AttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                       const Tensor& lse, const Tensor& d_out, float scale, Tensor* d_q,
                       Tensor* d_k, Tensor* d_v, Stream& stream);
absl::Status CudnnAttentionAvailable(int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                                     int64_t head_dim, DType dtype, const Device& device);
absl::StatusOr<std::string> CudnnVersion();
// The block ops (context parallelism): the flash kernels where they apply (bf16, head dim 64 or
// 128, Sq and Skv % 64 == 0, unless kRows is selected), else the row kernels; never cuDNN.
void AttentionBlockForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                           AttentionMask mask, Tensor* out, Tensor* lse, Stream& stream);
void AttentionBlockBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                            const Tensor& lse, const Tensor& d_out, float scale, AttentionMask mask,
                            Tensor* d_q, Tensor* d_k, Tensor* d_v, Stream& stream);
// attention_merge.cu
void AttentionMerge(const Tensor& out_a, const Tensor& lse_a, const Tensor& out_b,
                    const Tensor& lse_b, Tensor* out, Tensor* lse, Stream& stream);
void SwapLeadingDims(const Tensor& x, Tensor* out, Stream& stream);

// activation.cu
void SwiGluForward(const Tensor& gate_up, Tensor* out, Stream& stream);
void SwiGluBackward(const Tensor& gate_up, const Tensor& d_out, Tensor* d_gate_up, Stream& stream);

// elementwise.cu
void Add(const Tensor& a, const Tensor& b, Tensor* out, Stream& stream);
void Scale(float alpha, Tensor* x, Stream& stream);

// reduce.cu. SumOfSquares and Amax return host values: they wait for the stream. SumOfSquaresInto
// does not (acc stays on the GPU).
double SumOfSquares(const Tensor& x, Stream& stream);
float Amax(const Tensor& x, Stream& stream);
void SumOfSquaresInto(const Tensor& x, Tensor* acc, Stream& stream);

// router_logits.cu: x f32 or bf16, everything else f32.
void RouterLogitsForward(const Tensor& x, const Tensor& w, Tensor* logits, Stream& stream);
void RouterLogitsBackward(const Tensor& x, const Tensor& w, const Tensor& d_logits, Tensor* d_x,
                          Tensor* d_w, Stream& stream);

// router.cu (all f32). The losses accumulate into loss_sum on the device without waiting.
void RouterTopKForward(const Tensor& logits, const Tensor& expert_bias, const TopKOptions& options,
                       Tensor* ids, Tensor* weights, Stream& stream);
void RouterTopKBackward(const Tensor& logits, const Tensor& ids, const Tensor& weights,
                        const TopKOptions& options, const Tensor& d_weights, Tensor* d_logits,
                        Stream& stream);
void BalancedRouting(int64_t first_row, int num_experts, Tensor* ids, Tensor* weights,
                     Stream& stream);
void SoftmaxForward(const Tensor& logits, Tensor* probs, Stream& stream);
void SoftmaxBackward(const Tensor& probs, const Tensor& d_probs, Tensor* d_logits, Stream& stream);
void AuxLossForward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                    float coeff, Tensor* loss_sum, Stream& stream);
void AuxLossBackward(const Tensor& probs, const Tensor& counts, int64_t total_tokens, int k,
                     float coeff, float d_loss, Tensor* d_logits, Stream& stream);
void ZLossForward(const Tensor& logits, float coeff, int64_t total_tokens, Tensor* loss_sum,
                  Stream& stream);
void ZLossBackward(const Tensor& logits, float coeff, int64_t total_tokens, float d_loss,
                   Tensor* d_logits, Stream& stream);

// moe.cu
void ComputePermutation(const Tensor& ids, int num_experts, Tensor* sorted, Tensor* counts,
                        Stream& stream);
void PermuteTokens(const Tensor& x, const Tensor& sorted, int k, Tensor* out, Stream& stream);
void PermuteTokensBackward(const Tensor& d_out, const Tensor& sorted, int k, Tensor* d_x,
                           Stream& stream);
void UnpermuteTokens(const Tensor& y, const Tensor& sorted, const Tensor& weights, Tensor* out,
                     Stream& stream);
void UnpermuteTokensBackward(const Tensor& d_out, const Tensor& y, const Tensor& sorted,
                             const Tensor& weights, Tensor* d_y, Tensor* d_weights, Stream& stream);
void CountExpertsPerUnit(const Tensor& ids, int64_t first_row, int64_t unit_rows, Tensor* counts,
                         Stream& stream);
void ComputeCapacityPermutation(const Tensor& ids, const Tensor& weights, int num_experts,
                                int64_t capacity, DropPolicy policy, Tensor* sorted,
                                Tensor* counts, Tensor* demand, Stream& stream);

// rows.cu
void GatherRows(const Tensor& x, const Tensor& index, Tensor* out, Stream& stream);
void SumBlocks(const Tensor& blocks, Tensor* out, Stream& stream);

// loss.cu. logits and d_logits in the activation dtype (d_logits may alias logits).
void CrossEntropyForward(const Tensor& logits, const Tensor& targets, Tensor* token_losses,
                         Tensor* lse, Stream& stream);
void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                          const Tensor& d_token_losses, Tensor* d_logits, Stream& stream);
void CrossEntropyShardPartials(const Tensor& logits, const Tensor& targets, int64_t first_id,
                               Tensor* partials, Stream& stream);
void CrossEntropyFromShardPartials(const Tensor& partials, const Tensor& targets,
                                   Tensor* token_losses, Tensor* lse, Stream& stream);
void CrossEntropyShardBackward(const Tensor& logits, const Tensor& targets, int64_t first_id,
                               const Tensor& lse, const Tensor& d_token_losses, Tensor* d_logits,
                               Stream& stream);
void SampleLossSums(const Tensor& token_losses, const Tensor& targets, Tensor* sums,
                    Stream& stream);
void AccumulateSampleMeans(const Tensor& sums, Tensor* total, Stream& stream);

// adamw.cu: f32 flat buffers, compute bf16, no_decay_ranges i64.
void AdamWStep(const AdamWOptions& options, const Tensor& grad, Tensor* param, Tensor* m, Tensor* v,
               Stream& stream);
void AdamWFlatStep(const AdamWOptions& options, const Tensor& grad, const Tensor& grad_scale,
                   const Tensor& no_decay_ranges, Tensor* param, Tensor* m, Tensor* v,
                   Tensor* compute, Stream& stream);

// spam.cu: grad, grad_scale, clip, factors, stats, v f32; segments i64.
void SegmentGradStats(const Tensor& grad, const Tensor& grad_scale, const Tensor& segments,
                      const Tensor& clip, Tensor* stats, Stream& stream);
void SegmentClipScale(const Tensor& segments, const Tensor& factors, const Tensor& grad_scale,
                      Tensor* grad, Stream& stream);
void SpamSpikeClip(const Tensor& grad_scale, const Tensor& v, float theta, Tensor* grad,
                   Stream& stream);

// quant.cu: EF21 compressors; v, h, s, weights f32, messages u8 (rows of MessageBytes(n)).
void Ef21Encode(const Tensor& v, float v_scale, const CompressorSpec& spec, Tensor* h,
                Tensor* messages, Stream& stream);
void Ef21DecodeSum(const Tensor& messages, const CompressorSpec& spec, const Tensor& weights,
                   Tensor* s, Stream& stream);

// fp8.cu: x f32 or bf16, codes kFp8E4M3 or kFp8E5M2, scales and amaxes f32. The blockwise
// launchers expect dimensions already checked against the block (the public ops return the
// InvalidArgument).
void CastTransposeAmax(const Tensor& x, const Tensor& scale, Tensor* y, Tensor* y_t, Tensor* amax,
                       Stream& stream);
absl::Status QuantizeBlockwise(const Tensor& x, const Fp8BlockShape& block,
                               const BlockwiseOptions& options, Tensor* q, Tensor* scale_inv,
                               Stream& stream);
absl::Status DequantizeBlockwise(const Tensor& q, const Tensor& scale_inv,
                                 const Fp8BlockShape& block, Tensor* x, Stream& stream);
void Fp8UpdateScales(float fp8_max, Tensor* amax, Tensor* history, Tensor* scale, Tensor* scale_inv,
                     Stream& stream);

// fp8_fused.cu: arguments (and the tile divisibility) already checked by the public ops
// (ops/fp8_fused.h); these check what is device-specific and launch.
absl::Status RmsNormFp8(const Tensor& x, const Tensor& w, float eps, const Fp8Quantize& q,
                        Tensor* y, Tensor* rstd, Stream& stream);
absl::Status AddRmsNormFp8(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                           const Fp8Quantize& q, Tensor* sum, Tensor* y, Tensor* rstd,
                           Stream& stream);
absl::Status SwiGluFp8(const Tensor& gate_up, const Fp8Quantize& q, Tensor* act, Stream& stream);
absl::Status SwiGluBackwardFp8(const Tensor& gate_up, const Tensor& d_act, const Fp8Quantize& q,
                               Tensor* d_gate_up, Stream& stream);

// fp8_gemm.cc / fp8_gemm.cu: arguments already checked by the public op (ops/fp8_gemm.h).
// Per-tensor scales through cuBLASLt's FP8 matmul with scale pointers; blockwise scales through
// our kernel that promotes every K block's partial sum to f32.
absl::Status Fp8Gemm(const Tensor& a, const Tensor& a_scale_inv, const Tensor& b,
                     const Tensor& b_scale_inv, const Fp8GemmOptions& options, float beta,
                     Tensor* c, Stream& stream);
void Fp8GemmBlockwise(const Tensor& a, const Tensor& a_scale_inv, const Tensor& b,
                      const Tensor& b_scale_inv, int64_t block_k, float beta, Tensor* c,
                      Stream& stream);
void TransposePad(const Tensor& x, Tensor* y, Stream& stream);

// permute_quantize.cu: arguments as ops/permute_quantize.h (H checked against the tiles).
absl::Status PermuteQuantize(const Tensor& x, const Tensor& sorted, int k, const Tensor& scale,
                             const Tensor& scale_inv, const PermuteQuantizeOptions& options,
                             Tensor* codes, Tensor* row_scale_inv, Tensor* amax, Stream& stream);

}  // namespace moefold::ops::cuda
