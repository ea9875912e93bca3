// Token embedding lookup, of the whole table or of one shard of a vocabulary split over ranks.
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

// One shard of a vocabulary split over ranks (tensor parallelism): shard (V_shard, H) holds the
// rows of ids [first_id, first_id + V_shard). ids (T) i32 are global; an id outside the shard
// (another rank's, or any other value) is not an error here: it selects no row. Callers check ids
// against the whole vocabulary on their host copies. V_shard may be 0.
// out[t] = shard[ids[t] − first_id] if the id is in the shard, else zeros, so the sum of every
// shard's out is the full lookup. shard and out (T, H) f32 or bf16 (the same).
void EmbeddingShardForward(const Tensor& ids, const Tensor& shard, int64_t first_id, Tensor* out,
                           Stream& stream);
// d_shard[ids[t] − first_id] += d_out[t] for the ids in the shard (accumulated; repeated ids sum);
// other tokens contribute nothing. d_out (T, H) f32 or bf16, d_shard (V_shard, H) f32.
void EmbeddingShardBackward(const Tensor& ids, const Tensor& d_out, int64_t first_id,
                            Tensor* d_shard, Stream& stream);

}  // namespace moefold::ops
