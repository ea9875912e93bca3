// Token embedding lookup.
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): table and out f32 or bf16; d_table
// f32 (atomic adds: the order of f32 sums is not fixed).
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// out[t] = table[ids[t]]. ids (T) i32 with 0 <= id < V (checked), table (V, H) f32, out (T, H) f32.
void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor* out, Stream& stream);
// d_table[ids[t]] += d_out[t] (accumulated; repeated ids sum).
void EmbeddingBackward(const Tensor& ids, const Tensor& d_out, Tensor* d_table, Stream& stream);

}  // namespace moefold::ops
