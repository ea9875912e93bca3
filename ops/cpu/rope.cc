// CPU reference of rotary position embedding, Hugging Face "rotate_half" layout: element i < D/2
// pairs with i + D/2 and the pair rotates by pos · theta^(-2i/D). The factors are computed once by
// RopeTable in f64 (pos · inv_freq loses several bits in f32 at long positions) and rounded once to
// f32; the rotations read them from the table.
#include "ops/rope.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/bf16_emulation.h"
#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

// Fills cs (D/2, 2) with the (cos, sin) factors of position pos.
void FactorsOf(int32_t pos, double theta, int64_t dim, float* cs) {
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double inv_freq = std::pow(theta, -2.0 * i / dim);
    const double angle = static_cast<double>(pos) * inv_freq;
    cs[2 * i] = static_cast<float>(std::cos(angle));
    cs[2 * i + 1] = static_cast<float>(std::sin(angle));
  }
}

// out = in rotated by the factors cs (D/2, 2), sin negated for sign −1 (in may equal out).
void RotateRow(const float* in, const float* cs, int64_t half, float sign, float* out) {
  for (int64_t i = 0; i < half; ++i) {
    const float c = cs[2 * i], s = sign * cs[2 * i + 1];
    const float x1 = in[i], x2 = in[i + half];
    out[i] = x1 * c - x2 * s;
    out[i + half] = x2 * c + x1 * s;
  }
}

// The rows of a RopeTable (P, D/2, 2) for head dim D, checked once.
class Factors {
 public:
  Factors(const Tensor& table, int64_t dim, const char* op) : table_(table), dim_(dim), op_(op) {
    internal::CheckF32(table, op, "table");
    internal::CheckRank(table, 3, op, "table");
    MF_CHECK(table.dim(1) == dim / 2 && table.dim(2) == 2)
        << op << ": table must be (P, D/2=" << dim / 2 << ", 2), got " << table.DebugString();
  }

  // The (D/2, 2) factors of position pos.
  const float* Row(int32_t pos) const {
    MF_CHECK(pos >= 0 && pos < table_.dim(0))
        << op_ << ": position " << pos << " outside the table's [0, P=" << table_.dim(0) << ")";
    return table_.data<float>() + int64_t{pos} * dim_;
  }

 private:
  const Tensor& table_;
  int64_t dim_;
  const char* op_;
};

void CheckPositions(const Tensor& positions, int64_t tokens, const char* op) {
  internal::CheckI32(positions, op, "positions");
  internal::CheckShape(positions, {tokens}, op, "positions");
}

// Rotates every (i, i + D/2) pair of src (T, N, D) by ±angle into dst (src may equal dst), with
// the factors of `table`.
void Rotate(const Tensor& src, const Tensor& positions, const Tensor& table, float sign,
            Tensor* dst, const char* op) {
  if (internal::AnyBf16({&src, dst})) {
    internal::Bf16Emulation emu(op);
    emu.SameDType({&src, dst}, {"input", "output"});
    Rotate(emu.In(src), positions, table, sign, emu.Out(dst), op);
    emu.RoundBack();
    return;
  }
  internal::CheckF32(src, op, "input");
  internal::CheckRank(src, 3, op, "input");
  const int64_t tokens = src.dim(0), heads = src.dim(1), dim = src.dim(2);
  MF_CHECK(dim % 2 == 0) << op << ": head dim D must be even, got " << src.DebugString();
  CheckPositions(positions, tokens, op);
  internal::CheckF32Out(dst, src.shape(), op, "output");
  const Factors factors(table, dim, op);
  const int32_t* pos = positions.data<int32_t>();
  const float* in = src.data<float>();
  float* out = dst->data<float>();
  for (int64_t t = 0; t < tokens; ++t) {
    const float* cs = factors.Row(pos[t]);
    for (int64_t n = 0; n < heads; ++n) {
      const int64_t base = (t * heads + n) * dim;
      RotateRow(in + base, cs, dim / 2, sign, out + base);
    }
  }
}

// The grouped QKV layout (see rope.h): G groups of r query heads, one key and one value, head dim
// D, for T tokens. Checks the shapes of the fused tensor and of q, k, v (all f32 on the CPU).
struct QkvLayout {
  int64_t tokens, groups, r, dim;

  QkvLayout(const Tensor& fused, const Tensor& q, const Tensor& k, const Tensor& v,
            const char* fused_name, const char* op) {
    internal::CheckF32(fused, op, fused_name);
    internal::CheckF32(q, op, "q");
    internal::CheckF32(k, op, "k");
    internal::CheckF32(v, op, "v");
    internal::CheckRank(k, 3, op, "k");
    tokens = k.dim(0);
    groups = k.dim(1);
    dim = k.dim(2);
    MF_CHECK(groups >= 1 && dim % 2 == 0)
        << op << ": k must be (T, G ≥ 1, D even), got " << k.DebugString();
    internal::CheckRank(q, 3, op, "q");
    MF_CHECK(q.dim(0) == tokens && q.dim(2) == dim && q.dim(1) >= groups && q.dim(1) % groups == 0)
        << op << ": q must be (T, G·r, D) with G=" << groups << " from k, got " << q.DebugString();
    r = q.dim(1) / groups;
    internal::CheckShape(v, k.shape(), op, "v");
    internal::CheckShape(fused, {tokens, groups * (r + 2) * dim}, op, fused_name);
  }

  // The row of fused head j (< r + 2) of group g of token t in q (j < r), k (j = r) or v.
  float* SplitRow(const Tensor& q, const Tensor& k, const Tensor& v, int64_t t, int64_t g,
                  int64_t j) const {
    if (j < r) return q.data<float>() + ((t * groups + g) * r + j) * dim;
    return (j == r ? k : v).data<float>() + (t * groups + g) * dim;
  }
};

// Forward: fused rows -> q, k, v rotated by +angle (v copied); backward: d_q, d_k, d_v -> fused
// rows rotated by −angle. Shapes checked by the caller (QkvLayout).
void QkvRows(const QkvLayout& l, const Tensor& positions, const Tensor& table, bool forward,
             const Tensor& fused, const Tensor& q, const Tensor& k, const Tensor& v,
             const char* op) {
  CheckPositions(positions, l.tokens, op);
  const Factors factors(table, l.dim, op);
  const int64_t heads = l.groups * (l.r + 2);
  for (int64_t t = 0; t < l.tokens; ++t) {
    const float* cs = factors.Row(positions.data<int32_t>()[t]);
    for (int64_t g = 0; g < l.groups; ++g) {
      for (int64_t j = 0; j < l.r + 2; ++j) {
        float* fused_row = fused.data<float>() + (t * heads + g * (l.r + 2) + j) * l.dim;
        float* split_row = l.SplitRow(q, k, v, t, g, j);
        const float* in = forward ? fused_row : split_row;
        float* out = forward ? split_row : fused_row;
        if (j <= l.r) {  // queries and the key rotate, the value is copied
          RotateRow(in, cs, l.dim / 2, forward ? 1.0f : -1.0f, out);
        } else {
          std::copy(in, in + l.dim, out);
        }
      }
    }
  }
}

}  // namespace

Tensor RopeTable(int64_t max_position, int64_t head_dim, float theta) {
  MF_CHECK(max_position >= 1 && max_position <= int64_t{1} << 31)
      << "RopeTable: max_position " << max_position << " must be in [1, 2^31]";
  MF_CHECK(head_dim >= 2 && head_dim % 2 == 0)
      << "RopeTable: head dim must be even and positive, got " << head_dim;
  MF_CHECK(theta > 0.0f) << "RopeTable: theta must be positive, got " << theta;
  Tensor table = Tensor::Empty({max_position, head_dim / 2, 2}, DType::kF32);
  for (int64_t p = 0; p < max_position; ++p) {
    FactorsOf(static_cast<int32_t>(p), static_cast<double>(theta), head_dim,
              table.data<float>() + p * head_dim);
  }
  return table;
}

void RopeForward(const Tensor& x, const Tensor& positions, const Tensor& table, Tensor* y,
                 Stream& stream) {
  constexpr const char* kOp = "RopeForward";
  MF_RETURN_IF_GPU(x, kOp, cuda::RopeForward(x, positions, table, y, stream));
  Rotate(x, positions, table, 1.0f, y, kOp);
}

// The rotation is orthogonal, so its transpose (the gradient map) is the rotation by −angle.
void RopeBackward(const Tensor& d_y, const Tensor& positions, const Tensor& table, Tensor* d_x,
                  Stream& stream) {
  constexpr const char* kOp = "RopeBackward";
  MF_RETURN_IF_GPU(d_y, kOp, cuda::RopeBackward(d_y, positions, table, d_x, stream));
  Rotate(d_y, positions, table, -1.0f, d_x, kOp);
}

void QkvRopeForward(const Tensor& qkv, const Tensor& positions, const Tensor& table, Tensor* q,
                    Tensor* k, Tensor* v, Stream& stream) {
  constexpr const char* kOp = "QkvRopeForward";
  MF_RETURN_IF_GPU(qkv, kOp, cuda::QkvRopeForward(qkv, positions, table, q, k, v, stream));
  MF_CHECK(q != nullptr && k != nullptr && v != nullptr) << kOp << ": null output q, k or v";
  if (internal::AnyBf16({&qkv, q, k, v})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&qkv, q, k, v}, {"qkv", "q", "k", "v"});
    QkvRopeForward(emu.In(qkv), positions, table, emu.Out(q), emu.Out(k), emu.Out(v), stream);
    emu.RoundBack();
    return;
  }
  const QkvLayout l(qkv, *q, *k, *v, "qkv", kOp);
  QkvRows(l, positions, table, /*forward=*/true, qkv, *q, *k, *v, kOp);
}

void QkvRopeBackward(const Tensor& d_q, const Tensor& d_k, const Tensor& d_v,
                     const Tensor& positions, const Tensor& table, Tensor* d_qkv, Stream& stream) {
  constexpr const char* kOp = "QkvRopeBackward";
  MF_RETURN_IF_GPU(d_q, kOp, cuda::QkvRopeBackward(d_q, d_k, d_v, positions, table, d_qkv, stream));
  MF_CHECK(d_qkv != nullptr) << kOp << ": output d_qkv is null";
  if (internal::AnyBf16({&d_q, &d_k, &d_v, d_qkv})) {
    internal::Bf16Emulation emu(kOp);
    emu.SameDType({&d_q, &d_k, &d_v, d_qkv}, {"d_q", "d_k", "d_v", "d_qkv"});
    QkvRopeBackward(emu.In(d_q), emu.In(d_k), emu.In(d_v), positions, table, emu.Out(d_qkv),
                    stream);
    emu.RoundBack();
    return;
  }
  const QkvLayout l(*d_qkv, d_q, d_k, d_v, "d_qkv", kOp);
  QkvRows(l, positions, table, /*forward=*/false, *d_qkv, d_q, d_k, d_v, kOp);
}

}  // namespace moefold::ops
