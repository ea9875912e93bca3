// Token embedding lookup.
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): table and out f32 or bf16; d_table
// f32 (atomic adds: the order of f32 sums is not fixed).
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// Ids must lie in [0, V). The CPU checks them all before it touches a row and fails with the id
// and its position; the GPU does not wait for the host: a kernel meeting a bad id prints it with
// its position and traps (the stream and every later call on the device then fail), so callers
// check ids on their host copies first.

// out[t] = table[ids[t]]. ids (T) i32, table (V, H) f32, out (T, H) f32.
void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor* out, Stream& stream);
// d_table[ids[t]] += d_out[t] (accumulated; repeated ids sum). d_out (T, H), d_table (V, H) f32.
void EmbeddingBackward(const Tensor& ids, const Tensor& d_out, Tensor* d_table, Stream& stream);

}  // namespace moefold::ops
