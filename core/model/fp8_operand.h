// A GEMM operand already in FP8 (docs/FORMULAS.md §18.3): what a fused producer (ops/fp8_fused.h)
// hands to Fp8Training instead of the bf16 tensor that Fp8Training would quantise itself. The
// codes are the ones Fp8Training's own quantisation would make (same scale, same rounding), so a
// fused step equals the unfused one bit for bit.
//
//   Fp8ProducerTarget target;
//   if (ctx.fp8->PrepareFusedInput(*down_, t, f, ctx.s(), &target)) {
//     MF_RETURN_IF_ERROR(ops::SwiGluFp8(gate_up, target.Quantize(), &act, ctx.s()));
//     MF_RETURN_IF_ERROR(LinearQuantized(ctx, *down_, target.operand, w, &y));
//   }
#pragma once

#include "core/tensor.h"
#include "ops/fp8_fused.h"

namespace moefold::model {

struct Fp8Operand {
  Tensor codes;      // (T, K) fp8 (E4M3 for forward inputs, the gradient format for gradients)
  Tensor codes_t;    // optional, per tensor: (K, T_pad) transposed codes, zero columns from T on
  Tensor scale_inv;  // per tensor: (1) f32; blockwise: (T, K/128) f32 of 1×128 tiles
  bool blockwise = false;
};

// Where a fused producer writes an Fp8Operand, and how it quantises: per tensor with `scale`
// (a view of the delayed recipe's scale), accumulating the amax into `amax` (a view of the
// recipe's amax slot, so the step's amax is recorded as the unfused cast would record it); or in
// 1×128 tiles with `pow2` scales.
struct Fp8ProducerTarget {
  Fp8Operand operand;
  Tensor scale;
  Tensor amax;
  bool pow2 = false;
  // The producer's argument; it points into this struct, which must outlive the producer's call.
  ops::Fp8Quantize Quantize() {
    ops::Fp8Quantize q{.codes = &operand.codes};
    if (operand.blockwise) {
      q.scale_inv = &operand.scale_inv;
      q.pow2 = pow2;
    } else {
      q.scale = &scale;
      q.amax = &amax;
      if (operand.codes_t.defined()) q.codes_t = &operand.codes_t;
    }
    return q;
  }
};

}  // namespace moefold::model
