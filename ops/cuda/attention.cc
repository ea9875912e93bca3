// GQA attention on the GPU: argument checks as the CPU reference, then the backend that
// SetAttentionBackend selects. The causal single-sequence op under kAuto: cuDNN's fused SDPA where
// its graphs take the call, else the flash kernels where they apply, else the row kernels; a cuDNN
// failure prints one line per reason and that call, like every later one cuDNN has failed for, runs
// our kernels. The block ops (context parallelism) run the flash or the row kernels.
#include "ops/attention.h"

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "ops/cuda/attention_cudnn.h"
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
    CheckIn(*t, dev, q.dtype(), {d.batch, d.seq, d.kv_heads, d.head_dim}, op, name);
  }
  MF_CHECK(d.kv_heads > 0 && d.q_heads % d.kv_heads == 0)
      << op << ": query heads " << d.q_heads << " must be a multiple of KV heads " << d.kv_heads;
  const bool flash = FlashAttentionSupports(CausalBlock(d), q.dtype());
  MF_CHECK(flash || d.head_dim <= kRowAttentionMaxHeadDim)
      << op << ": head dim " << d.head_dim << " > " << kRowAttentionMaxHeadDim
      << " is not supported on the GPU";
  return d;
}

// The block ops' arguments: k and v (B, Skv, Hkv, D) of q's dtype; a causal block is square.
AttentionBlockDims CheckBlock(const Tensor& q, const Tensor& k, const Tensor& v, AttentionMask mask,
                              const Stream& stream, const char* op) {
  const Device dev = q.device();
  CheckStream(stream, dev, op);
  CheckActivation(q, dev, op, "q");
  CheckRank(q, 4, op, "q");
  CheckRank(k, 4, op, "k");
  const AttentionBlockDims d{
      q.dim(0), q.dim(1), k.dim(1), q.dim(2), k.dim(2), q.dim(3), mask == AttentionMask::kCausal};
  for (const auto& [t, name] : {std::pair<const Tensor*, const char*>{&k, "k"}, {&v, "v"}}) {
    CheckIn(*t, dev, q.dtype(), {d.batch, d.kv_seq, d.kv_heads, d.head_dim}, op, name);
  }
  MF_CHECK(d.kv_heads > 0 && d.q_heads % d.kv_heads == 0)
      << op << ": query heads " << d.q_heads << " must be a multiple of KV heads " << d.kv_heads;
  MF_CHECK(!d.causal || d.q_seq == d.kv_seq)
      << op << ": a causal block is a diagonal block, query length " << d.q_seq << " != key length "
      << d.kv_seq;
  MF_CHECK(FlashAttentionSupports(d, q.dtype()) || d.head_dim <= kRowAttentionMaxHeadDim)
      << op << ": head dim " << d.head_dim << " > " << kRowAttentionMaxHeadDim
      << " is not supported on the GPU";
  return d;
}

// The flash kernels move 16-byte vectors and cuDNN's tensors claim 16-byte alignment: every tensor
// must start 16-byte aligned (views made by Slice may not).
bool Aligned(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (!IsAligned(t->raw_data(), 16)) return false;
  }
  return true;
}

bool UseFlash(AttentionBackend backend, const AttentionBlockDims& d,
              std::initializer_list<const Tensor*> tensors) {
  return backend != AttentionBackend::kRows &&
         FlashAttentionSupports(d, (*tensors.begin())->dtype()) && Aligned(tensors);
}

// Whether the call goes to cuDNN: always under kCudnn (where a refusal is an error), under kAuto
// when the problem is one its graphs take.
bool TryCudnn(AttentionBackend backend, const AttentionDims& d, DType dtype,
              std::initializer_list<const Tensor*> tensors, const char* op) {
  if (backend == AttentionBackend::kCudnn) {
    MF_CHECK(Aligned(tensors)) << op << ": cuDNN SDPA (requested) needs 16-byte aligned tensors";
    return true;
  }
  return backend == AttentionBackend::kAuto && CudnnAttentionSupports(d, dtype) && Aligned(tensors);
}

// The outcome of a cuDNN call: true when it ran. A failure aborts under kCudnn; under kAuto it is
// reported once per distinct reason and the caller runs our kernels.
bool CudnnRan(const absl::Status& status, AttentionBackend backend, bool flash, const char* op) {
  if (status.ok()) return true;
  MF_CHECK(backend != AttentionBackend::kCudnn)
      << op << ": cuDNN SDPA was requested and failed: " << status.message();
  static std::mutex mutex;
  static std::set<std::string>* reported = new std::set<std::string>();
  std::lock_guard<std::mutex> lock(mutex);
  if (reported->insert(std::string(status.message())).second) {
    std::fprintf(stderr, "attention: cuDNN SDPA unavailable (%s); using the %s kernels\n",
                 std::string(status.message()).c_str(), flash ? "flash" : "row");
  }
  return false;
}

}  // namespace

void AttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                      Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "AttentionForward";
  const AttentionDims d = CheckQkv(q, k, v, stream, kOp);
  CheckOut(out, q.device(), q.dtype(), q.shape(), kOp, "out");
  CheckOut(lse, q.device(), DType::kF32, {d.batch, d.q_heads, d.seq}, kOp, "lse");
  if (d.batch * d.seq * d.q_heads == 0) return;
  const AttentionBackend backend = GetAttentionBackend();
  const bool flash = UseFlash(backend, CausalBlock(d), {&q, &k, &v, out});
  if (TryCudnn(backend, d, q.dtype(), {&q, &k, &v, out, lse}, kOp) &&
      CudnnRan(CudnnAttentionForward(d, q, k, v, scale, out, lse, stream), backend, flash, kOp)) {
    return;
  }
  if (flash) {
    FlashAttentionForward(CausalBlock(d), q, k, v, scale, out, lse, stream);
  } else {
    RowAttentionForward(CausalBlock(d), q, k, v, scale, out, lse, stream);
  }
}

void AttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                       const Tensor& lse, const Tensor& d_out, float scale, Tensor* d_q,
                       Tensor* d_k, Tensor* d_v, Stream& stream) {
  constexpr const char* kOp = "AttentionBackward";
  const AttentionDims d = CheckQkv(q, k, v, stream, kOp);
  for (const auto& [t, name] :
       {std::pair<const Tensor*, const char*>{&out, "out"}, {&d_out, "d_out"}}) {
    CheckIn(*t, q.device(), q.dtype(), q.shape(), kOp, name);
  }
  CheckIn(lse, q.device(), DType::kF32, {d.batch, d.q_heads, d.seq}, kOp, "lse");
  CheckOut(d_q, q.device(), q.dtype(), q.shape(), kOp, "d_q");
  CheckOut(d_k, q.device(), q.dtype(), k.shape(), kOp, "d_k");
  CheckOut(d_v, q.device(), q.dtype(), v.shape(), kOp, "d_v");
  if (d.batch * d.seq * d.q_heads == 0) return;
  const AttentionBackend backend = GetAttentionBackend();
  const bool flash = UseFlash(backend, CausalBlock(d), {&q, &k, &v, &out, &d_out, d_q, d_k, d_v});
  if (TryCudnn(backend, d, q.dtype(), {&q, &k, &v, &out, &lse, &d_out, d_q, d_k, d_v}, kOp) &&
      CudnnRan(CudnnAttentionBackward(d, q, k, v, out, lse, d_out, scale, d_q, d_k, d_v, stream),
               backend, flash, kOp)) {
    return;
  }
  if (flash) {
    FlashAttentionBackward(CausalBlock(d), q, k, v, out, lse, d_out, scale, false, d_q, d_k, d_v,
                           stream);
  } else {
    RowAttentionBackward(CausalBlock(d), q, k, v, out, lse, d_out, scale, false, d_q, d_k, d_v,
                         stream);
  }
}

void AttentionBlockForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                           AttentionMask mask, Tensor* out, Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "AttentionBlockForward";
  const AttentionBlockDims d = CheckBlock(q, k, v, mask, stream, kOp);
  MF_CHECK(out != nullptr) << kOp << ": output out is null";
  MF_CHECK(out->dtype() == q.dtype() || out->dtype() == DType::kF32)
      << kOp << ": out must be f32 or q's dtype " << DTypeName(q.dtype()) << ", got "
      << out->DebugString();
  CheckOut(out, q.device(), out->dtype(), q.shape(), kOp, "out");
  CheckOut(lse, q.device(), DType::kF32, {d.batch, d.q_heads, d.q_seq}, kOp, "lse");
  if (d.batch * d.q_seq * d.q_heads == 0) return;
  if (UseFlash(GetAttentionBackend(), d, {&q, &k, &v, out})) {
    FlashAttentionForward(d, q, k, v, scale, out, lse, stream);
  } else {
    RowAttentionForward(d, q, k, v, scale, out, lse, stream);
  }
}

void AttentionBlockBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                            const Tensor& lse, const Tensor& d_out, float scale, AttentionMask mask,
                            Tensor* d_q, Tensor* d_k, Tensor* d_v, Stream& stream) {
  constexpr const char* kOp = "AttentionBlockBackward";
  const AttentionBlockDims d = CheckBlock(q, k, v, mask, stream, kOp);
  for (const auto& [t, name] :
       {std::pair<const Tensor*, const char*>{&out, "out"}, {&d_out, "d_out"}}) {
    CheckIn(*t, q.device(), q.dtype(), q.shape(), kOp, name);
  }
  CheckIn(lse, q.device(), DType::kF32, {d.batch, d.q_heads, d.q_seq}, kOp, "lse");
  CheckOut(d_q, q.device(), DType::kF32, q.shape(), kOp, "d_q");
  CheckOut(d_k, q.device(), DType::kF32, k.shape(), kOp, "d_k");
  CheckOut(d_v, q.device(), DType::kF32, v.shape(), kOp, "d_v");
  if (d.batch * d.q_seq * d.q_heads == 0) return;
  if (UseFlash(GetAttentionBackend(), d, {&q, &k, &v, &out, &d_out, d_q, d_k, d_v})) {
    FlashAttentionBackward(d, q, k, v, out, lse, d_out, scale, true, d_q, d_k, d_v, stream);
  } else {
    RowAttentionBackward(d, q, k, v, out, lse, d_out, scale, true, d_q, d_k, d_v, stream);
  }
}

absl::Status CudnnAttentionAvailable(int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                                     int64_t head_dim, DType dtype, const Device& device) {
  const AttentionDims d{batch, seq, q_heads, kv_heads, head_dim};
  MF_RETURN_IF_ERROR(CudnnAttentionPrepare(d, dtype, false, device.index));
  return CudnnAttentionPrepare(d, dtype, true, device.index);
}

absl::StatusOr<std::string> CudnnVersion() { return CudnnRuntimeVersion(); }

}  // namespace moefold::ops::cuda
