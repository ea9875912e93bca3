// RMSNorm, as in Llama/Mixtral: y = x · rstd · w, rstd = 1/sqrt(mean(x²) + eps).
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// x (T, H) f32, w (H) f32 -> y (T, H) f32, rstd (T) f32 (saved for backward). On the GPU x, w, y,
// d_y, d_x may be bf16 (one dtype); rstd and d_w stay f32.
void RmsNormForward(const Tensor& x, const Tensor& w, float eps, Tensor* y, Tensor* rstd,
                    Stream& stream);
// The pre-norm residual step fused: sum = x + residual (the new residual stream), y = RMSNorm(sum).
// x, residual, sum, y (T, H); w (H); rstd (T) f32. On the GPU sum is rounded to its dtype before
// it is normalised (so backward, which reads sum, sees the same values).
void AddRmsNormForward(const Tensor& x, const Tensor& residual, const Tensor& w, float eps,
                       Tensor* sum, Tensor* y, Tensor* rstd, Stream& stream);
// With r = rstd and g = d_y · w: d_x = r·g − (r³/H)·x·⟨g, x⟩ (T, H), overwritten;
// d_w (H) f32 += Σ_t d_y · x · r. Either output may be null (not computed). d_x must not alias an
// input.
void RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& d_y,
                     Tensor* d_x, Tensor* d_w, Stream& stream);
// As RmsNormBackward, but d_x += the gradient: the sum is formed in f32 and rounded once into
// d_x's dtype, so the residual stream's gradient takes the norm's contribution without a separate
// Add pass.
void RmsNormBackwardAccumulate(const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& d_y, Tensor* d_x, Tensor* d_w, Stream& stream);

}  // namespace moefold::ops
