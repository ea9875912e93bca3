// CPU reference of the token embedding: a row gather forward, a scatter-add backward, of the whole
// table or of one vocabulary shard. Invariant: every id of a whole-table op is checked against V
// before any row is read or written; a shard op touches only the rows of ids inside the shard.
#include "ops/embedding.h"

#include <cstring>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

void CheckIds(const Tensor& ids, int64_t vocab, const char* op) {
  internal::CheckI32(ids, op, "ids");
  internal::CheckRank(ids, 1, op, "ids");
  const int32_t* id = ids.data<int32_t>();
  for (int64_t t = 0; t < ids.numel(); ++t) {
    MF_CHECK(id[t] >= 0 && id[t] < vocab) << op << ": token id " << id[t] << " at position " << t
                                          << " is out of range [0, V=" << vocab << ")";
  }
}

// The row of global id `id` in the shard of rows [first_id, first_id + rows), or -1 outside it.
int64_t ShardRow(int32_t id, int64_t first_id, int64_t rows) {
  const int64_t row = static_cast<int64_t>(id) - first_id;
  return row >= 0 && row < rows ? row : -1;
}

}  // namespace

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor* out, Stream& stream) {
  MF_RETURN_IF_GPU(table, "EmbeddingForward", cuda::EmbeddingForward(ids, table, out, stream));
  if (internal::AnyBf16({&table, out})) {
    internal::Bf16Emulation emu("EmbeddingForward");
    emu.SameDType({&table, out}, {"table", "out"});
    EmbeddingForward(ids, emu.In(table), emu.Out(out), stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(table, "EmbeddingForward", "table");
  internal::CheckRank(table, 2, "EmbeddingForward", "table");
  CheckIds(ids, table.dim(0), "EmbeddingForward");
  const int64_t num_tokens = ids.numel(), hidden = table.dim(1);
  internal::CheckF32Out(out, {num_tokens, hidden}, "EmbeddingForward", "out");
  const int32_t* id = ids.data<int32_t>();
  const float* src = table.data<float>();
  float* dst = out->data<float>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::memcpy(dst + t * hidden, src + id[t] * hidden, sizeof(float) * hidden);
  }
}

void EmbeddingBackward(const Tensor& ids, const Tensor& d_out, Tensor* d_table, Stream& stream) {
  MF_RETURN_IF_GPU(d_out, "EmbeddingBackward",
                   cuda::EmbeddingBackward(ids, d_out, d_table, stream));
  MF_CHECK(d_table != nullptr) << "EmbeddingBackward: output d_table is null";
  if (internal::AnyBf16({&d_out})) {
    internal::Bf16Emulation emu("EmbeddingBackward");
    emu.IsF32(d_table, "d_table");
    EmbeddingBackward(ids, emu.In(d_out), d_table, stream);
    return;
  }
  internal::CheckF32(*d_table, "EmbeddingBackward", "d_table");
  internal::CheckRank(*d_table, 2, "EmbeddingBackward", "d_table");
  CheckIds(ids, d_table->dim(0), "EmbeddingBackward");
  const int64_t num_tokens = ids.numel(), hidden = d_table->dim(1);
  internal::CheckF32(d_out, "EmbeddingBackward", "d_out");
  internal::CheckShape(d_out, {num_tokens, hidden}, "EmbeddingBackward", "d_out");
  const int32_t* id = ids.data<int32_t>();
  const float* g = d_out.data<float>();
  float* dt = d_table->data<float>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int64_t h = 0; h < hidden; ++h) dt[id[t] * hidden + h] += g[t * hidden + h];
  }
}

void EmbeddingShardForward(const Tensor& ids, const Tensor& shard, int64_t first_id, Tensor* out,
                           Stream& stream) {
  constexpr const char* kOp = "EmbeddingShardForward";
  MF_RETURN_IF_GPU(shard, kOp, cuda::EmbeddingShardForward(ids, shard, first_id, out, stream));
  if (internal::AnyBf16({&shard, out})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&shard, out}, {"shard", "out"});
    EmbeddingShardForward(ids, emu.In(shard), first_id, emu.Out(out), stream);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(shard, kOp, "shard");
  internal::CheckRank(shard, 2, kOp, "shard");
  internal::CheckI32(ids, kOp, "ids");
  internal::CheckRank(ids, 1, kOp, "ids");
  const int64_t num_tokens = ids.numel(), rows = shard.dim(0), hidden = shard.dim(1);
  internal::CheckF32Out(out, {num_tokens, hidden}, kOp, "out");
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t row = ShardRow(ids.data<int32_t>()[t], first_id, rows);
    float* dst = out->data<float>() + t * hidden;
    for (int64_t h = 0; h < hidden; ++h) {
      dst[h] = row < 0 ? 0.0f : shard.data<float>()[row * hidden + h];
    }
  }
}

void EmbeddingShardBackward(const Tensor& ids, const Tensor& d_out, int64_t first_id,
                            Tensor* d_shard, Stream& stream) {
  constexpr const char* kOp = "EmbeddingShardBackward";
  MF_RETURN_IF_GPU(d_out, kOp, cuda::EmbeddingShardBackward(ids, d_out, first_id, d_shard, stream));
  MF_CHECK(d_shard != nullptr) << kOp << ": output d_shard is null";
  if (internal::AnyBf16({&d_out})) {
    internal::Bf16Emulation emu(kOp);
    emu.IsF32(d_shard, "d_shard");
    EmbeddingShardBackward(ids, emu.In(d_out), first_id, d_shard, stream);
    return;
  }
  internal::CheckF32(*d_shard, kOp, "d_shard");
  internal::CheckRank(*d_shard, 2, kOp, "d_shard");
  internal::CheckI32(ids, kOp, "ids");
  internal::CheckRank(ids, 1, kOp, "ids");
  const int64_t num_tokens = ids.numel(), rows = d_shard->dim(0), hidden = d_shard->dim(1);
  internal::CheckF32(d_out, kOp, "d_out");
  internal::CheckShape(d_out, {num_tokens, hidden}, kOp, "d_out");
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t row = ShardRow(ids.data<int32_t>()[t], first_id, rows);
    if (row < 0) continue;
    for (int64_t h = 0; h < hidden; ++h) {
      d_shard->data<float>()[row * hidden + h] += d_out.data<float>()[t * hidden + h];
    }
  }
}

}  // namespace moefold::ops
