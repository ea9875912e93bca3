// CPU reference of the SPAM gradient transforms: plain loops, f32 element math (the same operation
// order as the CUDA kernels), f64 accumulation of the per-segment sums.
#include "ops/spam.h"

#include <algorithm>
#include <cmath>

#include "ops/cpu/check.h"

namespace moefold::ops {
namespace {

// segments (S, 2) i64 on the CPU: sorted, disjoint, within [0, n]. Returns S.
int64_t CheckSegments(const Tensor& segments, int64_t n, const char* op) {
  internal::CheckCpu(segments, op, "segments");
  internal::CheckDType(segments, DType::kI64, op, "segments");
  internal::CheckRank(segments, 2, op, "segments");
  MF_CHECK_EQ(segments.dim(1), 2) << op << ": segments " << segments.DebugString();
  const int64_t* s = segments.data<int64_t>();
  for (int64_t k = 0; k < segments.dim(0); ++k) {
    const int64_t lower = k == 0 ? 0 : s[2 * k - 1];
    MF_CHECK(lower <= s[2 * k] && s[2 * k] <= s[2 * k + 1] && s[2 * k + 1] <= n)
        << op << ": segment " << k << " [" << s[2 * k] << ", " << s[2 * k + 1]
        << ") is not sorted, disjoint and within [0, N=" << n << "]";
  }
  return segments.dim(0);
}

// g·f where |g| > c: the clip both ops share.
inline float Clip(float g, float c, float f) { return std::fabs(g) > c ? g * f : g; }

}  // namespace

void SegmentGradStats(const Tensor& grad, const Tensor& grad_scale, const Tensor& segments,
                      const Tensor& clip, Tensor* stats, Stream& stream) {
  constexpr const char* kOp = "SegmentGradStats";
  MF_RETURN_IF_GPU(grad, kOp,
                   cuda::SegmentGradStats(grad, grad_scale, segments, clip, stats, stream));
  internal::CheckF32(grad, kOp, "grad");
  internal::CheckF32(grad_scale, kOp, "grad_scale");
  internal::CheckShape(grad_scale, {1}, kOp, "grad_scale");
  const int64_t num = CheckSegments(segments, grad.numel(), kOp);
  const bool clipped = clip.defined();
  if (clipped) {
    internal::CheckF32(clip, kOp, "clip");
    internal::CheckShape(clip, {num, 2}, kOp, "clip");
  }
  internal::CheckF32Out(stats, {num, 2}, kOp, "stats");
  const float scale = grad_scale.data<float>()[0];
  const float* g = grad.data<float>();
  const int64_t* s = segments.data<int64_t>();
  float* out = stats->data<float>();
  for (int64_t k = 0; k < num; ++k) {
    const float c = clipped ? clip.data<float>()[2 * k] : INFINITY;
    const float f = clipped ? clip.data<float>()[2 * k + 1] : 1.0f;
    float max_abs = 0;
    double sum = 0;
    for (int64_t i = s[2 * k]; i < s[2 * k + 1]; ++i) {
      const float x = Clip(g[i] * scale, c, f);
      max_abs = std::max(max_abs, std::fabs(x));
      sum += static_cast<double>(x) * x;
    }
    out[2 * k] = max_abs;
    out[2 * k + 1] = static_cast<float>(sum);
  }
}

void SegmentClipScale(const Tensor& segments, const Tensor& factors, const Tensor& grad_scale,
                      Tensor* grad, Stream& stream) {
  constexpr const char* kOp = "SegmentClipScale";
  MF_CHECK(grad != nullptr) << kOp << ": grad is null";
  MF_RETURN_IF_GPU(*grad, kOp,
                   cuda::SegmentClipScale(segments, factors, grad_scale, grad, stream));
  internal::CheckF32(*grad, kOp, "grad");
  internal::CheckF32(grad_scale, kOp, "grad_scale");
  internal::CheckShape(grad_scale, {1}, kOp, "grad_scale");
  const int64_t num = CheckSegments(segments, grad->numel(), kOp);
  internal::CheckF32(factors, kOp, "factors");
  internal::CheckShape(factors, {num, 3}, kOp, "factors");
  const float scale = grad_scale.data<float>()[0];
  const float* a = factors.data<float>();
  const int64_t* s = segments.data<int64_t>();
  float* g = grad->data<float>();
  for (int64_t k = 0; k < num; ++k) {
    for (int64_t i = s[2 * k]; i < s[2 * k + 1]; ++i) {
      g[i] = Clip(g[i] * scale, a[3 * k], a[3 * k + 1]) * a[3 * k + 2];
    }
  }
}

void SpamSpikeClip(const Tensor& grad_scale, const Tensor& v, float theta, Tensor* grad,
                   Stream& stream) {
  constexpr const char* kOp = "SpamSpikeClip";
  MF_CHECK(grad != nullptr) << kOp << ": grad is null";
  MF_RETURN_IF_GPU(*grad, kOp, cuda::SpamSpikeClip(grad_scale, v, theta, grad, stream));
  internal::CheckF32(*grad, kOp, "grad");
  internal::CheckF32(v, kOp, "v");
  MF_CHECK_EQ(v.numel(), grad->numel()) << kOp << ": v " << v.DebugString() << ", grad "
                                        << grad->DebugString();
  internal::CheckF32(grad_scale, kOp, "grad_scale");
  internal::CheckShape(grad_scale, {1}, kOp, "grad_scale");
  const float scale = grad_scale.data<float>()[0];
  const float* pv = v.data<float>();
  float* g = grad->data<float>();
  for (int64_t i = 0; i < grad->numel(); ++i) {
    const float x = g[i] * scale;
    const float limit = theta * pv[i];
    g[i] = theta > 0 && x * x > limit ? std::copysign(std::sqrt(limit), x) : x;
  }
}

}  // namespace moefold::ops
