// CPU reference of the token embedding: a row gather forward, a scatter-add backward.
// Invariant: every id is checked against V before any row is read or written.
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

}  // namespace moefold::ops
