// CPU reference of the fused FP8 producers: the unfused op into its activation-dtype output (a
// scratch tensor when the caller does not want it), then one row quantiser over those rounded
// values with ops/cpu/fp8_cast.h's casts — the casts of ops/cpu/fp8.cc — so the result is the
// unfused composition's bit for bit. The argument checks (CheckQuantize) run for both devices.
#include "ops/fp8_fused.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "ops/activation.h"
#include "ops/cpu/check.h"
#include "ops/cpu/fp8_cast.h"
#include "ops/fp8.h"
#include "ops/norm.h"

namespace moefold::ops {
namespace {

constexpr int64_t kTile = 128;  // ops::kFp8ActivationTile.cols

void CheckOnDevice(const Tensor& t, const Device& device, const char* op, const char* name) {
  MF_CHECK(t.device() == device) << op << ": " << name << " " << t.DebugString() << " is not on "
                                 << device.ToString();
}

// q against an (M, N) output on `device`; InvalidArgument naming `what` (the dimension that is
// N) when tiles do not divide N.
absl::Status CheckQuantize(const Fp8Quantize& q, int64_t m, int64_t n, const Device& device,
                           const char* op, const char* what) {
  MF_CHECK(q.codes != nullptr) << op << ": Fp8Quantize::codes is null";
  CheckOnDevice(*q.codes, device, op, "codes");
  MF_CHECK(internal::IsFp8(q.codes->dtype()))
      << op << ": codes must be fp8_e4m3 or fp8_e5m2, got " << q.codes->DebugString();
  internal::CheckShape(*q.codes, {m, n}, op, "codes");
  if (q.scale != nullptr) {
    CheckOnDevice(*q.scale, device, op, "scale");
    internal::CheckDType(*q.scale, DType::kF32, op, "scale");
    internal::CheckShape(*q.scale, {1}, op, "scale");
    MF_CHECK(q.scale_inv == nullptr) << op << ": scale_inv is for 1×128 tiles (scale null)";
    if (q.codes_t != nullptr) {
      CheckOnDevice(*q.codes_t, device, op, "codes_t");
      internal::CheckRank(*q.codes_t, 2, op, "codes_t");
      MF_CHECK(q.codes_t->dtype() == q.codes->dtype() && q.codes_t->dim(0) == n &&
               q.codes_t->dim(1) >= m)
          << op << ": codes_t " << q.codes_t->DebugString() << " for codes "
          << q.codes->DebugString() << " (want (N, M_pad ≥ M) of the same dtype)";
    }
    if (q.amax != nullptr) {
      CheckOnDevice(*q.amax, device, op, "amax");
      internal::CheckDType(*q.amax, DType::kF32, op, "amax");
      internal::CheckShape(*q.amax, {1}, op, "amax");
    }
    return absl::OkStatus();
  }
  MF_CHECK(q.codes_t == nullptr && q.amax == nullptr)
      << op << ": codes_t and amax are for the per-tensor quantisation (scale given)";
  if (n % kTile != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", what, " = ", n,
                                                   " is not a multiple of the 1×128 tile's ",
                                                   kTile, " columns"));
  }
  MF_CHECK(q.scale_inv != nullptr) << op << ": 1×128 tiles need scale_inv";
  CheckOnDevice(*q.scale_inv, device, op, "scale_inv");
  internal::CheckDType(*q.scale_inv, DType::kF32, op, "scale_inv");
  internal::CheckShape(*q.scale_inv, {m, n / kTile}, op, "scale_inv");
  return absl::OkStatus();
}

// Quantises v (M, N), values already rounded to the activation dtype, as q says.
void QuantizeRows(const float* v, int64_t m, int64_t n, const Fp8Quantize& q) {
  const DType format = q.codes->dtype();
  uint8_t* pc = q.codes->data<uint8_t>();
  if (q.scale != nullptr) {
    const float s = q.scale->data<float>()[0];
    uint8_t* pt = q.codes_t != nullptr ? q.codes_t->data<uint8_t>() : nullptr;
    const int64_t mp = q.codes_t != nullptr ? q.codes_t->dim(1) : m;
    uint32_t bits = 0;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const float x = v[i * n + j];
        bits = std::max(bits, internal::AbsBits(x));
        const uint8_t code = internal::CastFp8(internal::Scaled(x, s), format);
        pc[i * n + j] = code;
        if (pt != nullptr) pt[j * mp + i] = code;
      }
    }
    if (pt != nullptr) {
      for (int64_t j = 0; j < n; ++j) std::fill(pt + j * mp + m, pt + (j + 1) * mp, uint8_t{0});
    }
    if (q.amax != nullptr) {
      float* pa = q.amax->data<float>();
      pa[0] = internal::FromBits(std::max(internal::AbsBits(pa[0]), bits));
    }
    return;
  }
  const float fp8_max = Fp8Max(format);
  const int64_t tiles = n / kTile;
  float* ps = q.scale_inv->data<float>();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t t = 0; t < tiles; ++t) {
      const float* tile = v + i * n + t * kTile;
      uint32_t bits = 0;
      for (int64_t j = 0; j < kTile; ++j) bits = std::max(bits, internal::AbsBits(tile[j]));
      const float s = Fp8ScaleFromAmax(internal::FromBits(bits), fp8_max, q.pow2, 1.0f);
      ps[i * tiles + t] = 1.0f / s;
      uint8_t* codes = pc + i * n + t * kTile;
      for (int64_t j = 0; j < kTile; ++j) {
        codes[j] = internal::CastFp8(internal::Scaled(tile[j], s), format);
      }
    }
  }
}

// The unfused output `out` (or a CPU scratch of `shape` and `dtype`), written by `produce`, then
// quantised.
template <typename Produce>
void ProduceThenQuantize(Tensor* out, const Shape& shape, DType dtype, const Fp8Quantize& q,
                         Stream& stream, const Produce& produce) {
  Tensor scratch;
  if (out == nullptr) {
    scratch = Tensor::Empty(shape, dtype);
    out = &scratch;
  }
  produce(out);
  const Tensor wide = out->To(DType::kF32, stream);  // exact: bf16 and f32 widen exactly
  QuantizeRows(wide.data<float>(), shape[0], shape[1], q);
}

void CheckOptionalOut(const Tensor* out, const Shape& shape, DType dtype, const Device& device,
                      const char* op, const char* name) {
  if (out == nullptr) return;
  CheckOnDevice(*out, device, op, name);
  internal::CheckDType(*out, dtype, op, name);
  internal::CheckShape(*out, shape, op, name);
}

}  // namespace

absl::Status RmsNormFp8(const Tensor& x, const Tensor& w, float eps, const Fp8Quantize& q,
                        Tensor* y, Tensor* rstd, Stream& stream) {
  constexpr const char* kOp = "RmsNormFp8";
  internal::CheckRank(x, 2, kOp, "x");
  const int64_t m = x.dim(0), n = x.dim(1);
  MF_RETURN_IF_ERROR(CheckQuantize(q, m, n, x.device(), kOp, "the hidden size N"));
  CheckOptionalOut(y, {m, n}, x.dtype(), x.device(), kOp, "y");
  MF_RETURN_IF_GPU(x, kOp, cuda::RmsNormFp8(x, w, eps, q, y, rstd, stream));
  ProduceThenQuantize(y, {m, n}, x.dtype(), q, stream,
                      [&](Tensor* out) { RmsNormForward(x, w, eps, out, rstd, stream); });
  return absl::OkStatus();
}

absl::Status AddRmsNormFp8(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                           const Fp8Quantize& q, Tensor* sum, Tensor* y, Tensor* rstd,
                           Stream& stream) {
  constexpr const char* kOp = "AddRmsNormFp8";
  internal::CheckRank(x, 2, kOp, "x");
  const int64_t m = x.dim(0), n = x.dim(1);
  MF_RETURN_IF_ERROR(CheckQuantize(q, m, n, x.device(), kOp, "the hidden size N"));
  CheckOptionalOut(y, {m, n}, x.dtype(), x.device(), kOp, "y");
  MF_CHECK(sum != nullptr) << kOp << ": sum is null";
  CheckOptionalOut(sum, {m, n}, x.dtype(), x.device(), kOp, "sum");
  MF_RETURN_IF_GPU(x, kOp, cuda::AddRmsNormFp8(x, residual, w, eps, q, sum, y, rstd, stream));
  ProduceThenQuantize(y, {m, n}, x.dtype(), q, stream, [&](Tensor* out) {
    AddRmsNormForward(x, residual, w, eps, sum, out, rstd, stream);
  });
  return absl::OkStatus();
}

absl::Status SwiGluFp8(const Tensor& gate_up, const Fp8Quantize& q, Tensor* act, Stream& stream) {
  constexpr const char* kOp = "SwiGluFp8";
  internal::CheckRank(gate_up, 2, kOp, "gate_up");
  MF_CHECK(gate_up.dim(1) % 2 == 0)
      << kOp << ": gate_up must have an even number of columns (gate | up), got "
      << gate_up.DebugString();
  const int64_t m = gate_up.dim(0), f = gate_up.dim(1) / 2;
  MF_RETURN_IF_ERROR(CheckQuantize(q, m, f, gate_up.device(), kOp, "the FFN width F"));
  CheckOptionalOut(act, {m, f}, gate_up.dtype(), gate_up.device(), kOp, "act");
  MF_RETURN_IF_GPU(gate_up, kOp, cuda::SwiGluFp8(gate_up, q, act, stream));
  ProduceThenQuantize(act, {m, f}, gate_up.dtype(), q, stream,
                      [&](Tensor* out) { SwiGluForward(gate_up, out, stream); });
  return absl::OkStatus();
}

absl::Status SwiGluBackwardFp8(const Tensor& gate_up, const Tensor& d_act, const Fp8Quantize& q,
                               Tensor* d_gate_up, Stream& stream) {
  constexpr const char* kOp = "SwiGluBackwardFp8";
  internal::CheckRank(gate_up, 2, kOp, "gate_up");
  const int64_t m = gate_up.dim(0), n = gate_up.dim(1);
  MF_RETURN_IF_ERROR(CheckQuantize(q, m, n, gate_up.device(), kOp, "the gate_up width 2F"));
  CheckOptionalOut(d_gate_up, {m, n}, gate_up.dtype(), gate_up.device(), kOp, "d_gate_up");
  MF_CHECK(d_gate_up == nullptr || gate_up.numel() == 0 ||
           d_gate_up->raw_data() != gate_up.raw_data())
      << kOp << ": d_gate_up must not alias gate_up";
  MF_RETURN_IF_GPU(gate_up, kOp, cuda::SwiGluBackwardFp8(gate_up, d_act, q, d_gate_up, stream));
  ProduceThenQuantize(d_gate_up, {m, n}, gate_up.dtype(), q, stream,
                      [&](Tensor* out) { SwiGluBackward(gate_up, d_act, out, stream); });
  return absl::OkStatus();
}

}  // namespace moefold::ops
