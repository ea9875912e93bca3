// Rotary position embedding in the Hugging Face "rotate_half" layout used by Llama, Mixtral and
// Qwen2: for head dim D, element i < D/2 pairs with i + D/2 and rotates by angle
// = pos · theta^(-2i/D). Positions are global (context parallelism passes its chunk offsets). GPU
// and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): activations f32 or bf16. The factors
// come from a (cos, sin) table built once on the host in f64 (RopeTable), so both devices rotate by
// the same f32 numbers.
//
//   const Tensor table = RopeTable(max_seq, head_dim, theta).To(device);   // once
//   QkvRopeForward(qkv, positions, table, &q, &k, &v, stream);            // every layer
#pragma once

#include <cstdint>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// table[p, i] = (cos(p·θ^(−2i/D)), sin(p·θ^(−2i/D))) for p < max_position, i < D/2, each computed
// in f64 (pos·θ^(−2i/D) loses bits in f32 at long positions) and rounded once to f32. Returns a
// CPU (P, D/2, 2) f32 tensor; the caller uploads it once. P ≥ 1, D even and ≥ 2, θ > 0.
Tensor RopeTable(int64_t max_position, int64_t head_dim, float theta);

// x (T, N, D) f32 or bf16 (N heads, D even), positions (T) i32 in [0, P), table (P, D/2, 2) f32
// from RopeTable on x's device -> y (T, N, D) in x's dtype, with (cos, sin) = table[pos, i]:
// y[i] = x[i]·cos − x[i + D/2]·sin, y[i + D/2] = x[i + D/2]·cos + x[i]·sin. y may alias x. The
// CPU checks the positions; the GPU kernel traps on a position out of range.
void RopeForward(const Tensor& x, const Tensor& positions, const Tensor& table, Tensor* y,
                 Stream& stream);
// The inverse rotation applied to d_y (the rotation is orthogonal). d_x may alias d_y.
void RopeBackward(const Tensor& d_y, const Tensor& positions, const Tensor& table, Tensor* d_x,
                  Stream& stream);

// Split of a fused QKV projection in Megatron's grouped layout, with RoPE, in one pass. Per token
// the GEMM output is (G, r+2, D): rows [g, 0..r−1] are query heads g·r .. g·r+r−1, row [g, r] is
// KV head g's key, row [g, r+1] its value (r = query heads per KV head; under TP each rank holds
// whole groups, so its slice has the same layout).
//   qkv (T, G·(r+2)·D) f32 or bf16; positions (T) i32 in [0, P); table (P, D/2, 2) f32.
//   q (T, G·r, D), k (T, G, D), v (T, G, D) in qkv's dtype, overwritten: q and k rotated as
//   RopeForward, v copied. G and D are read from k, r from q.
void QkvRopeForward(const Tensor& qkv, const Tensor& positions, const Tensor& table, Tensor* q,
                    Tensor* k, Tensor* v, Stream& stream);
// d_qkv (T, G·(r+2)·D) overwritten in the fused layout: the inverse rotation of d_q and d_k, d_v
// copied. d_q, d_k, d_v, d_qkv share one dtype (f32 or bf16).
void QkvRopeBackward(const Tensor& d_q, const Tensor& d_k, const Tensor& d_v,
                     const Tensor& positions, const Tensor& table, Tensor* d_qkv, Stream& stream);

}  // namespace moefold::ops
