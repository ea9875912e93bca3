// Reductions the step needs: squared norms for gradient clipping, amax for FP8 scaling.
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): Σx² of f32 or bf16 in f64 partials
// added in a fixed order. SumOfSquares and Amax return host values (on the GPU they wait for the
// stream); SumOfSquaresInto keeps its result on x's device and does not wait.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// Σ x² accumulated in f64 (x f32), so the global grad norm does not depend on summation order much.
double SumOfSquares(const Tensor& x, Stream& stream);
// acc += Σ x², accumulated in f64 on x's device (x f32 or bf16, any shape). acc (1) is one f64
// held in an i64 tensor (moefold has no f64 dtype; read it back as a double). On the GPU: f64
// partials per block, then one block adds them, in block order, and acc: no atomics, no host wait,
// the same result on every call with the same x on the same device.
void SumOfSquaresInto(const Tensor& x, Tensor* acc, Stream& stream);
// max |x| (x any floating dtype); NaN propagates.
float Amax(const Tensor& x, Stream& stream);

}  // namespace moefold::ops
