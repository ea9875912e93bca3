// Gradient transforms of the SPAM family of optimizers, applied to flat f32 gradient buffers before
// the AdamW step: per-segment statistics (a segment = the elements of one parameter tensor inside
// the buffer), a per-segment clip-and-scale, and SPAM's element-wise spike clip against AdamW's
// second moment. Each op first multiplies the gradient by a device scalar (the deferred 1/Z times
// the global clip factor), so the statistics and the result describe the gradient AdamW would have
// seen. The host combines the statistics of the pieces of one tensor across ranks (optim/spam.h).
//
//   SegmentGradStats(grad, scale, segments, Tensor(), &stats, stream);   // max|g|, Σg² per segment
//   SegmentClipScale(segments, factors, scale, &grad, stream);          // g ← clip(g·s)·scale_k
#pragma once

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// Per segment k of `segments` ((S, 2) i64 [begin, end) element ranges of grad, sorted, disjoint,
// within [0, N]), with g_i = grad_i · grad_scale[0] and, when `clip` is defined ((S, 2) f32: per
// segment a threshold c and a factor f), g_i ← g_i · f wherever |g_i| > c:
//   stats[k] = (max_i |g_i|, Σ_i g_i²)  over i in segment k (0, 0 for an empty segment).
// grad (N) f32, grad_scale (1) f32, segments and clip on grad's device; stats (S, 2) f32 there. The
// sum accumulates in f64 on the CPU and in f32 per thread then a fixed tree on the GPU, so the two
// agree within f32 rounding; the max is exact on both. A NaN gradient gives a NaN sum.
void SegmentGradStats(const Tensor& grad, const Tensor& grad_scale, const Tensor& segments,
                      const Tensor& clip, Tensor* stats, Stream& stream);

// In place, per segment k with factors[k] = (c, f, a) ((S, 3) f32):
//   g_i ← grad_i · grad_scale[0];  g_i ← g_i · f  where |g_i| > c;  grad_i ← g_i · a.
// Elements outside every segment (padding, zeros) are left as they are. grad (N) f32, grad_scale
// (1) f32, segments (S, 2) i64 as in SegmentGradStats, all on grad's device.
void SegmentClipScale(const Tensor& segments, const Tensor& factors, const Tensor& grad_scale,
                      Tensor* grad, Stream& stream);

// SPAM's spike clip, in place: g_i ← grad_i · grad_scale[0]; where g_i² > theta · v_i,
//   grad_i ← sign(g_i) · sqrt(theta · v_i), else grad_i ← g_i.
// theta <= 0 only scales. grad, v (N) f32 (v: AdamW's second moment of the same elements, before
// this step's update), grad_scale (1) f32, on one device.
void SpamSpikeClip(const Tensor& grad_scale, const Tensor& v, float theta, Tensor* grad,
                   Stream& stream);

}  // namespace moefold::ops
