// Causal GQA attention through cuDNN's fused SDPA (internal to ops/cuda): the forward and backward
// operation graphs, one execution plan per (B, S, Hq, Hkv, D, dtype, direction, device), kept for
// the process (a failure is kept too, so asking again is a lookup), and their execution. Nothing
// here aborts on a cuDNN problem: every entry returns a Status and attention.cc decides between
// falling back to our kernels (kAuto) and failing (kCudnn).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "ops/cuda/attention_kernels.h"

namespace moefold::ops::cuda {

// The problems the graphs are written for, answered without cuDNN: bf16, head dim 64 or 128,
// S ≥ 2, Hq a multiple of Hkv. (The installed version may still decline some: see Prepare.)
bool CudnnAttentionSupports(const AttentionDims& d, DType dtype);

// OkStatus when the plan of this problem and direction exists on GPU `device` (loading cuDNN and
// building the plan on first use). Unavailable: no cuDNN; Unimplemented: a shape the graphs or the
// installed version do not take; otherwise cuDNN's error with the failing step. Messages name the
// cuDNN version and the problem.
absl::Status CudnnAttentionPrepare(const AttentionDims& d, DType dtype, bool backward, int device);

// The op on cuDNN (arguments already checked by attention.cc; every tensor contiguous and 16-byte
// aligned). Shapes as ops/attention.h; lse is cuDNN's softmax statistics, max + log Σ exp of the
// scaled masked scores: the natural-log log-sum-exp our kernels and the CPU write. On an error no
// output has been touched (the caller may run another backend into the same outputs).
absl::Status CudnnAttentionForward(const AttentionDims& d, const Tensor& q, const Tensor& k,
                                   const Tensor& v, float scale, Tensor* out, Tensor* lse,
                                   const Stream& stream);
absl::Status CudnnAttentionBackward(const AttentionDims& d, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const Tensor& out, const Tensor& lse,
                                    const Tensor& d_out, float scale, Tensor* d_q, Tensor* d_k,
                                    Tensor* d_v, const Stream& stream);

// cuDNN's runtime version ("9.19.0"), or why it cannot be loaded.
absl::StatusOr<std::string> CudnnRuntimeVersion();

// Builds (and finalises) every tensor and operation descriptor of the graph, in each form it may
// take, without a GPU or a handle: a check that the graphs are well formed for the installed cuDNN
// (tests).
absl::Status CudnnAttentionCheckGraph(const AttentionDims& d, DType dtype, bool backward);

// Without a GPU: for each form the graph may take (the current one first), how many engine
// configs of the installed cuDNN pass their support checks on the device `device_json` describes
// (CudnnGraph::SupportedConfigsFor: cuDNN >= 9.11 and libcuda, the driver or its stub). Tests.
absl::StatusOr<std::vector<int64_t>> CudnnAttentionSupportedConfigs(const AttentionDims& d,
                                                                    DType dtype, bool backward,
                                                                    const std::string& device_json);

}  // namespace moefold::ops::cuda
