// Translation of CUDA runtime and cuBLAS codes into Status (CUDA builds only; see gpu_error.h).
#include "core/gpu_error.h"

#include <cublas_api.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"

namespace moefold {
namespace {

absl::StatusCode CudaCode(cudaError_t code) {
  switch (code) {
    case cudaErrorMemoryAllocation:
      return absl::StatusCode::kResourceExhausted;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
      return absl::StatusCode::kFailedPrecondition;
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
      return absl::StatusCode::kInvalidArgument;
    case cudaErrorNotSupported:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::StatusCode CublasCode(cublasStatus_t code) {
  switch (code) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::StatusCode::kResourceExhausted;
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return absl::StatusCode::kFailedPrecondition;
    case CUBLAS_STATUS_INVALID_VALUE:
      return absl::StatusCode::kInvalidArgument;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::Status GpuStatus(GpuLibrary library, int code, const char* call, const char* file,
                       int line) {
  if (code == 0) return absl::OkStatus();  // cudaSuccess == CUBLAS_STATUS_SUCCESS == 0
  absl::StatusCode status_code = absl::StatusCode::kInternal;
  std::string name;
  switch (library) {
    case GpuLibrary::kCudaRuntime: {
      const auto error = static_cast<cudaError_t>(code);
      status_code = CudaCode(error);
      name = absl::StrCat(cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
      break;
    }
    case GpuLibrary::kCublas: {
      const auto error = static_cast<cublasStatus_t>(code);
      status_code = CublasCode(error);
      name = absl::StrCat("cuBLAS status ", code, " (", cublasGetStatusString(error), ")");
      break;
    }
  }
  return absl::Status(status_code, absl::StrCat(call, " failed at ", file, ":", line, ": ", name));
}

}  // namespace moefold
