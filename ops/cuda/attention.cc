// Causal GQA attention on the GPU: argument checks as the CPU reference, then the flash kernels
// where they apply (bf16, head dim 64/128, S % 64 == 0) and the row kernels otherwise.
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "ops/cuda/attention_kernels.h"
#include "ops/cuda/check.h"
#include "ops/cuda/launchers.h"

namespace moefold::ops::cuda {
namespace {

AttentionDims CheckQkv(const Tensor& q, const Tensor& k, const Tensor& v, const Stream& stream,
                       const char* op) {
  const Device dev = q.device();
  CheckStream(stream, dev, op);
  CheckActivation(q, dev, op, "q");
  CheckRank(q, 4, op, "q");
  CheckRank(k, 4, op, "k");
  const AttentionDims d{q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3)};
  for (const auto& [t, name] : {std::pair<const Tensor*, const char*>{&k, "k"}, {&v, "v"}}) {
    CheckOn(*t, dev, op, name);
    CheckDType(*t, q.dtype(), op, name);
    CheckShape(*t, {d.batch, d.seq, d.kv_heads, d.head_dim}, op, name);
  }
  MF_CHECK(d.kv_heads > 0 && d.q_heads % d.kv_heads == 0)
      << op << ": query heads " << d.q_heads << " must be a multiple of KV heads " << d.kv_heads;
  const bool flash = FlashAttentionSupports(d, q.dtype());
  MF_CHECK(flash || d.head_dim <= kRowAttentionMaxHeadDim)
      << op << ": head dim " << d.head_dim << " > " << kRowAttentionMaxHeadDim
      << " is not supported on the GPU";
  return d;
}

// The flash kernels move 16-byte vectors: every tensor they touch must start 16-byte aligned
// (views made by Slice may not).
bool UseFlash(const AttentionDims& d, std::initializer_list<const Tensor*> tensors) {
  if (!FlashAttentionSupports(d, (*tensors.begin())->dtype())) return false;
  for (const Tensor* t : tensors) {
    if (reinterpret_cast<uintptr_t>(t->raw_data()) % 16 != 0) return false;
  }
  return true;
}

}  // namespace

void AttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                      Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "AttentionForward";
  const AttentionDims d = CheckQkv(q, k, v, stream, kOp);
  CheckOut(out, q.device(), q.dtype(), q.shape(), kOp, "out");
  CheckOut(lse, q.device(), DType::kF32, {d.batch, d.q_heads, d.seq}, kOp, "lse");
  if (d.batch * d.seq * d.q_heads == 0) return;
  if (UseFlash(d, {&q, &k, &v, out})) {
    FlashAttentionForward(d, q, k, v, scale, out, lse, stream);
  } else {
    RowAttentionForward(d, q, k, v, scale, out, lse, stream);
  }
}

void AttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                       const Tensor& lse, const Tensor& d_out, float scale, Tensor* d_q,
                       Tensor* d_k, Tensor* d_v, Stream& stream) {
  constexpr const char* kOp = "AttentionBackward";
  const AttentionDims d = CheckQkv(q, k, v, stream, kOp);
  for (const auto& [t, name] :
       {std::pair<const Tensor*, const char*>{&out, "out"}, {&d_out, "d_out"}}) {
    CheckOn(*t, q.device(), kOp, name);
    CheckDType(*t, q.dtype(), kOp, name);
    CheckShape(*t, q.shape(), kOp, name);
  }
  CheckOn(lse, q.device(), kOp, "lse");
  CheckDType(lse, DType::kF32, kOp, "lse");
  CheckShape(lse, {d.batch, d.q_heads, d.seq}, kOp, "lse");
  CheckOut(d_q, q.device(), q.dtype(), q.shape(), kOp, "d_q");
  CheckOut(d_k, q.device(), q.dtype(), k.shape(), kOp, "d_k");
  CheckOut(d_v, q.device(), q.dtype(), v.shape(), kOp, "d_v");
  if (d.batch * d.seq * d.q_heads == 0) return;
  if (UseFlash(d, {&q, &k, &v, &out, &d_out, d_q, d_k, d_v})) {
    FlashAttentionBackward(d, q, k, v, out, lse, d_out, scale, d_q, d_k, d_v, stream);
  } else {
    RowAttentionBackward(d, q, k, v, out, lse, d_out, scale, d_q, d_k, d_v, stream);
  }
}

}  // namespace moefold::ops::cuda
