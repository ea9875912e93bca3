// Reductions the step needs: squared norms for gradient clipping, amax for FP8 scaling.
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): SumOfSquares of f32 or bf16 (f64
// partials in a fixed order); both wait for the stream.
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// Σ x² accumulated in f64 (x f32), so the global grad norm does not depend on summation order much.
double SumOfSquares(const Tensor& x, Stream& stream);
// max |x| (x any floating dtype); NaN propagates.
float Amax(const Tensor& x, Stream& stream);

}  // namespace moefold::ops
