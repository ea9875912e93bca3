// CPU reference of grouped-query attention: out = softmax(scale·QKᵀ + mask) · V per (batch, query
// head), query head h reading KV head h / (Hq/Hkv); the mask is causal (the single-sequence op and
// a ring's diagonal blocks) or none (a ring's earlier blocks). The log-sum-exp of each row is saved
// so backward rebuilds the probabilities exactly (as flash attention does). Also home of the
// process-wide GPU backend choice and the cuDNN queries (dispatched to ops/cuda).
#include "ops/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

struct Dims {
  int64_t batch, q_seq, kv_seq, q_heads, kv_heads, head_dim;
  bool causal;
  // Keys 0..VisibleEnd(i)−1 are visible to query i.
  int64_t VisibleEnd(int64_t i) const { return causal ? i + 1 : kv_seq; }
  // Queries FirstQuery(j).. see key j.
  int64_t FirstQuery(int64_t j) const { return causal ? j : 0; }
};

Dims CheckQkv(const Tensor& q, const Tensor& k, const Tensor& v, AttentionMask mask,
              const char* op) {
  internal::CheckF32(q, op, "q");
  internal::CheckF32(k, op, "k");
  internal::CheckF32(v, op, "v");
  internal::CheckRank(q, 4, op, "q");
  internal::CheckRank(k, 4, op, "k");
  const Dims d{
      q.dim(0), q.dim(1), k.dim(1), q.dim(2), k.dim(2), q.dim(3), mask == AttentionMask::kCausal};
  internal::CheckShape(k, {d.batch, d.kv_seq, d.kv_heads, d.head_dim}, op, "k");
  internal::CheckShape(v, k.shape(), op, "v");
  MF_CHECK(d.kv_heads > 0 && d.q_heads % d.kv_heads == 0)
      << op << ": query heads " << d.q_heads << " must be a multiple of KV heads " << d.kv_heads;
  MF_CHECK(!d.causal || d.q_seq == d.kv_seq)
      << op << ": a causal block is a diagonal block, query length " << d.q_seq << " != key length "
      << d.kv_seq;
  return d;
}

// The backward's other arguments, f32 on the CPU: out and d_out shaped as q, lse (B, Hq, Sq), the
// gradients shaped as q, k and v.
void CheckBackwardArgs(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& out,
                       const Tensor& lse, const Tensor& d_out, const Tensor* d_q, const Tensor* d_k,
                       const Tensor* d_v, const char* op) {
  internal::CheckF32(out, op, "out");
  internal::CheckShape(out, q.shape(), op, "out");
  internal::CheckF32(lse, op, "lse");
  internal::CheckShape(lse, {d.batch, d.q_heads, d.q_seq}, op, "lse");
  internal::CheckF32(d_out, op, "d_out");
  internal::CheckShape(d_out, q.shape(), op, "d_out");
  internal::CheckF32Out(d_q, q.shape(), op, "d_q");
  internal::CheckF32Out(d_k, k.shape(), op, "d_k");
  internal::CheckF32Out(d_v, k.shape(), op, "d_v");
}

// Element (b, s, h, :) of a (B, S, H, D) tensor.
inline int64_t Row(int64_t b, int64_t s, int64_t h, int64_t seq, int64_t heads, int64_t dim) {
  return ((b * seq + s) * heads + h) * dim;
}

double DotRow(const float* a, const float* b, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

// The forward on checked f32 tensors (f64 accumulation, one rounding per output).
void Forward(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, float scale,
             Tensor* out, Tensor* lse) {
  const int64_t group = d.q_heads / d.kv_heads, dim = d.head_dim;
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  float* po = out->data<float>();
  float* pl = lse->data<float>();
  std::vector<double> scores(d.kv_seq), acc(dim);
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < d.q_heads; ++h) {
      const int64_t kvh = h / group;
      for (int64_t i = 0; i < d.q_seq; ++i) {
        const float* qi = pq + Row(b, i, h, d.q_seq, d.q_heads, dim);
        const int64_t end = d.VisibleEnd(i);
        // Subtract the row max before exp for stability.
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < end; ++j) {
          scores[j] = scale * DotRow(qi, pk + Row(b, j, kvh, d.kv_seq, d.kv_heads, dim), dim);
          max_score = std::max(max_score, scores[j]);
        }
        double denom = 0;
        for (int64_t j = 0; j < end; ++j) denom += std::exp(scores[j] - max_score);
        const double row_lse = max_score + std::log(denom);
        pl[(b * d.q_heads + h) * d.q_seq + i] = static_cast<float>(row_lse);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < end; ++j) {
          const double p = std::exp(scores[j] - row_lse);
          const float* vj = pv + Row(b, j, kvh, d.kv_seq, d.kv_heads, dim);
          for (int64_t c = 0; c < dim; ++c) acc[c] += p * vj[c];
        }
        float* oi = po + Row(b, i, h, d.q_seq, d.q_heads, dim);
        for (int64_t c = 0; c < dim; ++c) oi[c] = static_cast<float>(acc[c]);
      }
    }
  }
}

// The backward on checked f32 tensors: the gradients are summed in f64 and then written
// (`accumulate` false) or added (true) to d_q, d_k, d_v, rounding once.
void Backward(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
              const Tensor& lse, const Tensor& d_out, float scale, bool accumulate, Tensor* d_q,
              Tensor* d_k, Tensor* d_v) {
  const int64_t group = d.q_heads / d.kv_heads, dim = d.head_dim;
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  const float* po = out.data<float>();
  const float* pl = lse.data<float>();
  const float* pdo = d_out.data<float>();
  // d_k and d_v collect contributions from several queries and heads: accumulate in f64.
  std::vector<double> dk(k.numel(), 0.0), dv(v.numel(), 0.0), dq(dim);
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < d.q_heads; ++h) {
      const int64_t kvh = h / group;
      for (int64_t i = 0; i < d.q_seq; ++i) {
        const int64_t qrow = Row(b, i, h, d.q_seq, d.q_heads, dim);
        const float* qi = pq + qrow;
        const float* doi = pdo + qrow;
        const double row_lse = pl[(b * d.q_heads + h) * d.q_seq + i];
        const double delta = DotRow(doi, po + qrow, dim);
        std::fill(dq.begin(), dq.end(), 0.0);
        for (int64_t j = 0; j < d.VisibleEnd(i); ++j) {
          const int64_t kvrow = Row(b, j, kvh, d.kv_seq, d.kv_heads, dim);
          const float* kj = pk + kvrow;
          const double p = std::exp(scale * DotRow(qi, kj, dim) - row_lse);
          const double ds = p * (DotRow(doi, pv + kvrow, dim) - delta);
          for (int64_t c = 0; c < dim; ++c) {
            dq[c] += scale * ds * kj[c];
            dk[kvrow + c] += scale * ds * qi[c];
            dv[kvrow + c] += p * doi[c];
          }
        }
        float* dqi = d_q->data<float>() + qrow;
        for (int64_t c = 0; c < dim; ++c) {
          dqi[c] = static_cast<float>(accumulate ? dqi[c] + dq[c] : dq[c]);
        }
      }
    }
  }
  float* pdk = d_k->data<float>();
  float* pdv = d_v->data<float>();
  for (int64_t i = 0; i < k.numel(); ++i) {
    pdk[i] = static_cast<float>(accumulate ? pdk[i] + dk[i] : dk[i]);
    pdv[i] = static_cast<float>(accumulate ? pdv[i] + dv[i] : dv[i]);
  }
}

}  // namespace

void AttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                      Tensor* lse, Stream& stream) {
  MF_RETURN_IF_GPU(q, "AttentionForward", cuda::AttentionForward(q, k, v, scale, out, lse, stream));
  if (internal::AnyBf16({&q, &k, &v, out})) {
    internal::Bf16Emulation emu("AttentionForward");
    emu.SameDType({&q, &k, &v, out}, {"q", "k", "v", "out"});
    emu.IsF32(lse, "lse");
    AttentionForward(emu.In(q), emu.In(k), emu.In(v), scale, emu.Out(out), lse, stream);
    emu.RoundBack();
    return;
  }
  const Dims d = CheckQkv(q, k, v, AttentionMask::kCausal, "AttentionForward");
  internal::CheckF32Out(out, q.shape(), "AttentionForward", "out");
  internal::CheckF32Out(lse, {d.batch, d.q_heads, d.q_seq}, "AttentionForward", "lse");
  Forward(d, q, k, v, scale, out, lse);
}

// With P_ij = exp(scale·q_i·k_j − lse_i), dP_ij = d_out_i·v_j and Δ_i = d_out_i·out_i = Σ_j P_ij
// dP_ij:
//   dS_ij = P_ij (dP_ij − Δ_i);  d_q_i = scale Σ_j dS_ij k_j;  d_k_j += scale dS_ij q_i;
//   d_v_j += P_ij d_out_i. KV gradients sum over the query heads of their group.
void AttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                       const Tensor& lse, const Tensor& d_out, float scale, Tensor* d_q,
                       Tensor* d_k, Tensor* d_v, Stream& stream) {
  MF_RETURN_IF_GPU(q, "AttentionBackward",
                   cuda::AttentionBackward(q, k, v, out, lse, d_out, scale, d_q, d_k, d_v, stream));
  if (internal::AnyBf16({&q, &k, &v, &out, &d_out, d_q, d_k, d_v})) {
    internal::Bf16Emulation emu("AttentionBackward");
    emu.SameDType({&q, &k, &v, &out, &d_out, d_q, d_k, d_v},
                  {"q", "k", "v", "out", "d_out", "d_q", "d_k", "d_v"});
    emu.IsF32(&lse, "lse");
    AttentionBackward(emu.In(q), emu.In(k), emu.In(v), emu.In(out), lse, emu.In(d_out), scale,
                      emu.Out(d_q), emu.Out(d_k), emu.Out(d_v), stream);
    emu.RoundBack();
    return;
  }
  constexpr const char* kOp = "AttentionBackward";
  const Dims d = CheckQkv(q, k, v, AttentionMask::kCausal, kOp);
  CheckBackwardArgs(d, q, k, out, lse, d_out, d_q, d_k, d_v, kOp);
  Backward(d, q, k, v, out, lse, d_out, scale, /*accumulate=*/false, d_q, d_k, d_v);
}

void AttentionBlockForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                           AttentionMask mask, Tensor* out, Tensor* lse, Stream& stream) {
  constexpr const char* kOp = "AttentionBlockForward";
  MF_RETURN_IF_GPU(q, kOp, cuda::AttentionBlockForward(q, k, v, scale, mask, out, lse, stream));
  MF_CHECK(out != nullptr) << kOp << ": output out is null";
  if (internal::AnyBf16({&q, &k, &v, out})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&q, &k, &v}, {"q", "k", "v"});
    MF_CHECK(out->dtype() == q.dtype() || out->dtype() == DType::kF32)
        << kOp << ": out must be f32 or q's dtype " << DTypeName(q.dtype()) << ", got "
        << out->DebugString();
    emu.IsF32(lse, "lse");
    // An f32 out stays f32: the partial is not rounded to the inputs' bf16.
    AttentionBlockForward(emu.In(q), emu.In(k), emu.In(v), scale, mask, emu.Out(out), lse, stream);
    emu.RoundBack();
    return;
  }
  const Dims d = CheckQkv(q, k, v, mask, kOp);
  internal::CheckF32Out(out, q.shape(), kOp, "out");
  internal::CheckF32Out(lse, {d.batch, d.q_heads, d.q_seq}, kOp, "lse");
  Forward(d, q, k, v, scale, out, lse);
}

void AttentionBlockBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                            const Tensor& lse, const Tensor& d_out, float scale, AttentionMask mask,
                            Tensor* d_q, Tensor* d_k, Tensor* d_v, Stream& stream) {
  constexpr const char* kOp = "AttentionBlockBackward";
  MF_RETURN_IF_GPU(
      q, kOp,
      cuda::AttentionBlockBackward(q, k, v, out, lse, d_out, scale, mask, d_q, d_k, d_v, stream));
  if (internal::AnyBf16({&q, &k, &v, &out, &d_out})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&q, &k, &v, &out, &d_out}, {"q", "k", "v", "out", "d_out"});
    AttentionBlockBackward(emu.In(q), emu.In(k), emu.In(v), emu.In(out), lse, emu.In(d_out), scale,
                           mask, d_q, d_k, d_v, stream);
    return;
  }
  const Dims d = CheckQkv(q, k, v, mask, kOp);
  CheckBackwardArgs(d, q, k, out, lse, d_out, d_q, d_k, d_v, kOp);
  Backward(d, q, k, v, out, lse, d_out, scale, /*accumulate=*/true, d_q, d_k, d_v);
}

namespace {

std::atomic<AttentionBackend>& Backend() {
  static std::atomic<AttentionBackend> backend{AttentionBackend::kAuto};
  return backend;
}

}  // namespace

void SetAttentionBackend(AttentionBackend backend) { Backend().store(backend); }
AttentionBackend GetAttentionBackend() { return Backend().load(); }

absl::Status CudnnAttentionAvailable(int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                                     int64_t head_dim, DType dtype, const Device& device) {
#ifdef MOEFOLD_HAVE_CUDA
  if (device.is_cuda()) {
    return cuda::CudnnAttentionAvailable(batch, seq, q_heads, kv_heads, head_dim, dtype, device);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("cuDNN SDPA runs on a GPU, not on ", device.ToString()));
#else
  static_cast<void>(batch + seq + q_heads + kv_heads + head_dim);
  static_cast<void>(dtype);
  return absl::UnavailableError(absl::StrCat("cuDNN SDPA on ", device.ToString(),
                                             ": moefold was built without the CUDA backend"));
#endif
}

absl::StatusOr<std::string> CudnnVersion() {
#ifdef MOEFOLD_HAVE_CUDA
  return cuda::CudnnVersion();
#else
  return absl::UnavailableError("moefold was built without the CUDA backend");
#endif
}

}  // namespace moefold::ops
