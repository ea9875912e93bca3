// Causal grouped-query attention (the unfused reference; the GPU uses fused kernels).
// Query head h reads KV head h / (Hq / Hkv). scale is usually 1/sqrt(D).
// GPU and CPU (which emulates bf16: ops/cpu/bf16_emulation.h): q, k, v, out and the gradients f32
// or bf16 (one dtype), lse f32. On the GPU, by default, bf16 with head dim 64/128 runs cuDNN's
// fused SDPA (loaded at run time), else our flash kernels (bf16, head dim 64/128, S % 64 == 0),
// else our row kernels; SetAttentionBackend picks one for tests and benchmarks.
//
//   SetAttentionBackend(AttentionBackend::kCudnn);  // a cuDNN failure is now an error
//   ASSERT_OK(CudnnAttentionAvailable(1, 4096, 16, 4, 128, DType::kBF16, Device::Cuda(0)));
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops {

// Which implementation runs attention on the GPU (the CPU always runs the reference).
// kAuto (default): cuDNN where its graphs take the call (bf16, head dim 64/128, S >= 2); when
//   loading cuDNN or building its plan fails, one line on stderr names the reason and that shape
//   runs the flash kernels where they apply, else the row kernels, from then on.
// kCudnn: cuDNN or abort (tests and benchmarks that must know what ran).
// kFlash: the flash kernels where they apply, else the row kernels.
// kRows: the row kernels (any dtype of the two, head dim <= 256).
// Process-wide; set it before the calls it should govern.
enum class AttentionBackend { kAuto, kCudnn, kFlash, kRows };
void SetAttentionBackend(AttentionBackend backend);
AttentionBackend GetAttentionBackend();

// OkStatus when cuDNN runs causal GQA attention of this problem, forward and backward, on `device`
// (a GPU): loads cuDNN and builds both execution plans, which stay cached. Otherwise why not:
// Unavailable (no cuDNN library, or no CUDA backend), Unimplemented (a dtype or shape the graphs or
// the installed cuDNN do not take), the CUDA runtime's error (no such GPU), or cuDNN's own error
// naming the failing step, its version and the problem.
absl::Status CudnnAttentionAvailable(int64_t batch, int64_t seq, int64_t q_heads, int64_t kv_heads,
                                     int64_t head_dim, DType dtype, const Device& device);
// cuDNN's runtime version ("9.19.0"); loads the library (no GPU needed). Unavailable without it.
absl::StatusOr<std::string> CudnnVersion();

// q (B, S, Hq, D), k and v (B, S, Hkv, D), Hq % Hkv == 0, f32 or bf16 (one dtype).
// out (B, S, Hq, D) in their dtype; lse (B, Hq, S) f32 = natural-log log-sum-exp of each query's
// scaled, masked scores (every backend writes the same), saved so backward rebuilds the
// probabilities without storing them (flash-attention style).
void AttentionForward(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor* out,
                      Tensor* lse, Stream& stream);
// d_q, d_k, d_v overwritten (same shapes as q, k, v).
void AttentionBackward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                       const Tensor& lse, const Tensor& d_out, float scale, Tensor* d_q,
                       Tensor* d_k, Tensor* d_v, Stream& stream);

}  // namespace moefold::ops
