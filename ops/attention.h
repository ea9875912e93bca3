// Causal grouped-query attention (the unfused reference; the GPU uses fused kernels), the block
// form context parallelism's ring computes (a query block against another key/value block, causal
// on the diagonal or full, backward from the final softmax statistics), the online-softmax merge of
// block partials, and the chunk layout the ring works in.
// Query head h reads KV head h / (Hq / Hkv). scale is usually 1/sqrt(D).
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): q, k, v, out and the gradients f32
// or bf16 (one dtype), lse f32. On the GPU, by default, bf16 with head dim 64/128 runs cuDNN's
// fused SDPA (loaded at run time), else our flash kernels (bf16, head dim 64/128, S % 64 == 0),
// else our row kernels; SetAttentionBackend picks one for tests and benchmarks.
//
//   SetAttentionBackend(AttentionBackend::kCudnn);  // a cuDNN failure is now an error
//   ASSERT_OK(CudnnAttentionAvailable(1, 4096, 16, 4, 128, DType::kBF16, Device::Cuda(0)));
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// Which implementation runs attention on the GPU (the CPU always runs the reference).
// kAuto (default): cuDNN where its graphs take the call (bf16, head dim 64/128, S >= 2); when
//   loading cuDNN or building its plan fails, one line on stderr names the reason and that shape
//   runs the flash kernels where they apply, else the row kernels, from then on.
// kCudnn: cuDNN or abort (tests and benchmarks that must know what ran).
// kFlash: the flash kernels where they apply, else the row kernels.
// kRows: the row kernels (any dtype of the two, head dim <= 256).
// Process-wide; set it before the calls it should govern.
enum class AttentionBackend { kAuto, kCudnn, kFlash, kRows };
void SetAttentionBackend(AttentionBackend backend);
AttentionBackend GetAttentionBackend();

// OkStatus when cuDNN runs causal GQA attention of this problem, forward and backward, on `device`
// (a GPU): loads cuDNN and builds both execution plans, which stay cached. Otherwise why not:
// Unavailable (no cuDNN library, or no CUDA backend), Unimplemented (a dtype or shape the graphs or
// the installed cuDNN do not take), the CUDA runtime's error (no such GPU), or cuDNN's own error
// naming the failing step, its version and the problem.
absl::Status CudnnAttentionAvailable(int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                                     int64_t head_dim, DType dtype, const Device& device);
// cuDNN's runtime version ("9.19.0"); loads the library (no GPU needed). Unavailable without it.
absl::StatusOr<std::string> CudnnVersion();

// q (B, S, Hq, D), k and v (B, S, Hkv, D), Hq % Hkv == 0, f32 or bf16 (one dtype).
// out (B, S, Hq, D) in their dtype; lse (B, Hq, S) f32 = natural-log log-sum-exp of each query's
// scaled, masked scores (every backend writes the same), saved so backward rebuilds the
// probabilities without storing them (flash-attention style).
void AttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                      Tensor* lse, Stream& stream);
// d_q, d_k, d_v overwritten (same shapes as q, k, v).
void AttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                       const Tensor& lse, const Tensor& d_out, float scale, Tensor* d_q,
                       Tensor* d_k, Tensor* d_v, Stream& stream);

// Which keys of a key/value block a query block sees.
//   kCausal: the diagonal block of a causal sequence (Sq == Skv): query i sees keys 0..i.
//   kNone:   every key (a key block entirely earlier in the sequence than the query block).
enum class AttentionMask { kCausal, kNone };

// Attention of a query block against one key/value block (a step of context parallelism's ring):
// out = softmax(mask(scale·Q·Kᵀ))·V over this block's keys only, lse the natural-log log-sum-exp of
// each query's visible scaled scores in this block. q (B, Sq, Hq, D), k and v (B, Skv, Hkv, D), one
// dtype (f32 or bf16); Sq == Skv for kCausal. out (B, Sq, Hq, D) in q's dtype or f32 (f32 keeps a
// bf16 block's partial unrounded for AttentionMerge); lse (B, Hq, Sq) f32. On the GPU: the flash
// kernels where they apply (bf16, head dim 64/128, Sq and Skv % 64 == 0), else the row kernels;
// never cuDNN, whose graphs write out (and gradients) in the input dtype only.
void AttentionBlockForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                           AttentionMask mask, Tensor* out, Tensor* lse, Stream& stream);

// The block's share of the gradients, given the FINAL out and lse of its queries (over all the
// blocks they attend to). With those, P_ij = exp(scale·q_i·k_j − lse_i) and Δ_i = ⟨d_out_i, out_i⟩
// are the whole softmax's, so the sums over this block's visible pairs are exact parts of the
// gradients (the flash-attention identity), and summing them over the blocks gives
// AttentionBackward:
//   dS_ij = P_ij (d_out_i·v_j − Δ_i);  d_q_i += scale Σ_j dS_ij k_j;  d_k_j += scale Σ_i dS_ij q_i;
//   d_v_j += Σ_i P_ij d_out_i  (KV gradients summed over the query heads of their group).
// q, out, d_out (B, Sq, Hq, D) and k, v (B, Skv, Hkv, D) one dtype (f32 or bf16); lse (B, Hq, Sq)
// f32. d_q (B, Sq, Hq, D), d_k and d_v (B, Skv, Hkv, D) f32, ACCUMULATED (+=): a ring adds each
// block's share without rounding in between.
void AttentionBlockBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                            const Tensor& lse, const Tensor& d_out, float scale, AttentionMask mask,
                            Tensor* d_q, Tensor* d_k, Tensor* d_v, Stream& stream);

// Online-softmax merge of two partial attentions of the same queries over disjoint key sets, per
// (batch, head, query):
//   lse = log(e^{lse_a} + e^{lse_b}),  out = e^{lse_a − lse}·out_a + e^{lse_b − lse}·out_b.
// An empty side (lse = −inf) has weight exactly 0 and its out is not read (it may hold anything):
// one empty side gives the other's out and lse bit for bit, both empty give lse = −inf, out = 0.
// out_a, out_b (B, S, Hq, D) f32 or bf16 (each); lse_a, lse_b (B, Hq, S) f32; out (B, S, Hq, D)
// f32, so partials accumulate unrounded; lse (B, Hq, S) f32. out may alias out_a or out_b and lse
// lse_a or lse_b (the running form: merge a block into the result so far).
void AttentionMerge(const Tensor& out_a, const Tensor& lse_a, const Tensor& out_b,
                    const Tensor& lse_b, Tensor* out, Tensor* lse, Stream& stream);

// out (N, A, R) = x (A, N, R): the two leading dimensions swapped, each element converted to out's
// dtype (f32 or bf16 each; to bf16 rounds to nearest even). The ring's chunk layout: a local
// sequence (B, n·c, H, D) viewed as (B, n, c·H·D) becomes (n, B, c, H, D), each chunk a contiguous
// (B, c, H, D) tensor, and back; lse (B, H, n·c) viewed as (B·H, n, c) likewise.
void SwapLeadingDims(const Tensor& x, Tensor* out, Stream& stream);

}  // namespace moefold::ops
