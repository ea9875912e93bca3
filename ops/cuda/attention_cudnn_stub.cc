// The cuDNN attention path in CUDA builds without cuDNN's headers (cudnn_graph.h): nothing is
// supported, so kAuto keeps our kernels silently and kCudnn fails with the reason.
#include "ops/cuda/attention_cudnn.h"

namespace moefold::ops::cuda {
namespace {

absl::Status NotBuilt() {
  return absl::UnavailableError("moefold was built without cuDNN's headers (cudnn_graph.h)");
}

}  // namespace

bool CudnnAttentionSupports(const AttentionDims&, DType) { return false; }

absl::Status CudnnAttentionPrepare(const AttentionDims&, DType, bool, int) { return NotBuilt(); }

absl::Status CudnnAttentionForward(const AttentionDims&, const Tensor&, const Tensor&,
                                   const Tensor&, float, Tensor*, Tensor*, const Stream&) {
  return NotBuilt();
}

absl::Status CudnnAttentionBackward(const AttentionDims&, const Tensor&, const Tensor&,
                                    const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                    float, Tensor*, Tensor*, Tensor*, const Stream&) {
  return NotBuilt();
}

absl::StatusOr<std::string> CudnnRuntimeVersion() { return NotBuilt(); }

absl::Status CudnnAttentionCheckGraph(const AttentionDims&, DType, bool) { return NotBuilt(); }

absl::StatusOr<std::vector<int64_t>> CudnnAttentionSupportedConfigs(const AttentionDims&, DType,
                                                                    bool, const std::string&) {
  return NotBuilt();
}

}  // namespace moefold::ops::cuda
