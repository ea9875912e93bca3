// CUDA AdamW over flat f32 buffers: one fused pass reading g, p, m, v and writing p, m, v (and the
// bf16 compute copy in the flat step), with the CPU reference's per-step scalars
// (ops/cpu/adamw_scalars.h). Every element goes through one update function written with
// round-to-nearest intrinsics (no FMA contraction), so the per-parameter and the flat kernels give
// the same bits for the same scaled gradient, and the CPU reference's bits (IEEE f32 operations in
// the same order). The gradient scale is a device scalar: nothing here waits for the host.
#include <cstdint>
#include <utility>

#include "ops/cpu/adamw_scalars.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/launchers.h"
#include "ops/cuda/vector.cuh"

namespace moefold::ops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxStagedRanges = 1024;  // no-decay ranges staged in shared memory (16 KiB)

using internal::AdamWScalars;

// The CPU reference's Update, one IEEE operation at a time.
__device__ __forceinline__ void Update(const AdamWScalars& c, float decay, float g, float* p,
                                       float* m, float* v) {
  const float param = __fmul_rn(*p, decay);
  const float mi = __fadd_rn(__fmul_rn(c.beta1, *m), __fmul_rn(__fsub_rn(1.0f, c.beta1), g));
  const float vi =
      __fadd_rn(__fmul_rn(c.beta2, *v), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, c.beta2), g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.bias_correction2_sqrt), c.eps);
  *p = __fsub_rn(param, __fdiv_rn(__fmul_rn(c.step_size, mi), denom));
  *m = mi;
  *v = vi;
}

__global__ void AdamWKernel(AdamWScalars c, const float* g, float* p, float* m, float* v,
                            int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    Update(c, c.decay, g[i], p + i, m + i, v + i);
  }
}

// The first of the sorted, disjoint ranges [begin, end) (pairs in `ranges`) that ends after i.
__device__ __forceinline__ int64_t FirstEndingAfter(const int64_t* ranges, int64_t count,
                                                    int64_t i) {
  int64_t lo = 0, hi = count;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (ranges[2 * mid + 1] <= i) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Item = kVec consecutive elements (16-byte packs for kVec = 4; the tail of n element by element).
template <int kVec>
__global__ void AdamWFlatKernel(AdamWScalars c, const float* g, const float* grad_scale,
                                const int64_t* ranges, int64_t num_ranges, float* p, float* m,
                                float* v, bf16* compute, int64_t n) {
  extern __shared__ int64_t staged[];
  if (num_ranges <= kMaxStagedRanges) {
    for (int64_t i = threadIdx.x; i < 2 * num_ranges; i += blockDim.x) staged[i] = ranges[i];
    __syncthreads();
    ranges = staged;
  }
  const float scale = *grad_scale;
  const int64_t items = (n + kVec - 1) / kVec;
  for (int64_t q = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; q < items;
       q += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i0 = q * kVec;
    int64_t r = FirstEndingAfter(ranges, num_ranges, i0);
    // The decay of element i (advancing r: elements come in increasing order).
    auto decay_of = [&](int64_t i) {
      while (r < num_ranges && ranges[2 * r + 1] <= i) ++r;
      return r < num_ranges && ranges[2 * r] <= i ? c.no_decay : c.decay;
    };
    if constexpr (kVec > 1) {
      if (i0 + kVec <= n) {
        const Pack<float, kVec> gv = LoadPack<kVec>(g + i0);
        Pack<float, kVec> pv = LoadPack<kVec>(p + i0), mv = LoadPack<kVec>(m + i0),
                          vv = LoadPack<kVec>(v + i0);
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          Update(c, decay_of(i0 + j), __fmul_rn(gv.v[j], scale), pv.v + j, mv.v + j, vv.v + j);
        }
        StorePack<kVec>(p + i0, pv);
        StorePack<kVec>(m + i0, mv);
        StorePack<kVec>(v + i0, vv);
        // kVec bf16 in one pack (8 bytes for kVec = 4; the host checked that alignment).
        if (compute != nullptr) StorePack<kVec>(compute + i0, PackFromF32<bf16>(pv.v));
        continue;
      }
    }
    for (int64_t i = i0; i < i0 + kVec && i < n; ++i) {
      Update(c, decay_of(i), __fmul_rn(g[i], scale), p + i, m + i, v + i);
      if (compute != nullptr) compute[i] = __float2bfloat16_rn(p[i]);
    }
  }
}

// grad, param, m, v: f32 on param's device (the stream's), with the same element count.
int64_t CheckState(const Tensor& grad, const Tensor* param, const Tensor* m, const Tensor* v,
                   const Stream& stream, const char* op) {
  MF_CHECK(param != nullptr && m != nullptr && v != nullptr) << op << ": null state tensor";
  const Device dev = param->device();
  CheckStream(stream, dev, op);
  for (const auto& [t, name] : {std::pair<const Tensor*, const char*>{&grad, "grad"},
                                {param, "param"},
                                {m, "m"},
                                {v, "v"}}) {
    CheckOn(*t, dev, op, name);
    CheckDType(*t, DType::kF32, op, name);
  }
  const int64_t n = param->numel();
  MF_CHECK(grad.numel() == n && m->numel() == n && v->numel() == n)
      << op << ": element counts differ: param " << param->DebugString() << ", grad "
      << grad.DebugString() << ", m " << m->DebugString() << ", v " << v->DebugString();
  return n;
}

}  // namespace

void AdamWStep(const AdamWOptions& options, const Tensor& grad, Tensor* param, Tensor* m, Tensor* v,
               Stream& stream) {
  constexpr const char* kOp = "AdamWStep";
  const int64_t n = CheckState(grad, param, m, v, stream, kOp);
  const AdamWScalars c = internal::AdamWScalarsOf(options, kOp);
  if (n == 0) return;
  AdamWKernel<<<DeviceGrid(n, kThreads, kThreads, stream), kThreads, 0, Native(stream)>>>(
      c, grad.data<float>(), param->data<float>(), m->data<float>(), v->data<float>(), n);
  MF_CUDA_CHECK_LAUNCH();
}

void AdamWFlatStep(const AdamWOptions& options, const Tensor& grad, const Tensor& grad_scale,
                   const Tensor& no_decay_ranges, Tensor* param, Tensor* m, Tensor* v,
                   Tensor* compute, Stream& stream) {
  constexpr const char* kOp = "AdamWFlatStep";
  const int64_t n = CheckState(grad, param, m, v, stream, kOp);
  const Device dev = param->device();
  CheckIn(grad_scale, dev, DType::kF32, {1}, kOp, "grad_scale");
  CheckOn(no_decay_ranges, dev, kOp, "no_decay_ranges");
  CheckDType(no_decay_ranges, DType::kI64, kOp, "no_decay_ranges");
  CheckRank(no_decay_ranges, 2, kOp, "no_decay_ranges");
  MF_CHECK_EQ(no_decay_ranges.dim(1), 2) << kOp << ": " << no_decay_ranges.DebugString();
  const bool write_compute = compute != nullptr && compute->defined();
  if (write_compute) {
    CheckOn(*compute, dev, kOp, "compute");
    CheckDType(*compute, DType::kBF16, kOp, "compute");
    MF_CHECK_EQ(compute->numel(), n) << kOp << ": compute " << compute->DebugString();
  }
  const AdamWScalars c = internal::AdamWScalarsOf(options, kOp);
  if (n == 0) return;
  const int64_t num_ranges = no_decay_ranges.dim(0);
  const size_t shared = num_ranges <= kMaxStagedRanges ? 16 * num_ranges : 0;
  bf16* out = write_compute ? static_cast<bf16*>(compute->raw_data()) : nullptr;
  constexpr int kVec = kVecWidth<float>;
  const bool vec =
      VectorAligned<float>({grad.raw_data(), param->raw_data(), m->raw_data(), v->raw_data()}, 0) &&
      IsAligned(out, int64_t{kVec} * sizeof(bf16));
  const int64_t* ranges = no_decay_ranges.data<int64_t>();
  auto launch = [&](auto width) {
    constexpr int N = decltype(width)::value;
    AdamWFlatKernel<N><<<DeviceGrid((n + N - 1) / N, kThreads, kThreads, stream), kThreads, shared,
                         Native(stream)>>>(c, grad.data<float>(), grad_scale.data<float>(), ranges,
                                           num_ranges, param->data<float>(), m->data<float>(),
                                           v->data<float>(), out, n);
  };
  if (vec) {
    launch(std::integral_constant<int, kVec>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
  MF_CUDA_CHECK_LAUNCH();
}

}  // namespace moefold::ops::cuda
