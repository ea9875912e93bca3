// The one place where CUDA runtime and cuBLAS error codes become absl::Status: each message names
// the call, its file:line and the library's own text. No CUDA header here, so any file may use the
// macros; the codes travel as int (the libraries' enums convert implicitly).
//
//   MF_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, stream));
//   MF_CUBLAS_CHECK(cublasLtMatmul(...));   // aborts with the translated message
#pragma once

#include "absl/status/status.h"
#include "core/status.h"

namespace moefold {

enum class GpuLibrary { kCudaRuntime, kCublas };

// OkStatus for a success code; otherwise ResourceExhausted (out of memory), FailedPrecondition
// (no device or driver), Unimplemented (not supported), InvalidArgument (bad value) or Internal,
// with "CALL failed at FILE:LINE: NAME (library message)". Only defined in CUDA builds.
absl::Status GpuStatus(GpuLibrary library, int code, const char* call, const char* file, int line);

}  // namespace moefold

#define MF_GPU_STATUS_(library, call) \
  ::moefold::GpuStatus(::moefold::GpuLibrary::library, static_cast<int>(call), #call, __FILE__, __LINE__)

#define MF_CUDA_RETURN_IF_ERROR(call) MF_RETURN_IF_ERROR(MF_GPU_STATUS_(kCudaRuntime, call))
#define MF_CUBLAS_RETURN_IF_ERROR(call) MF_RETURN_IF_ERROR(MF_GPU_STATUS_(kCublas, call))

// For invariants (a kernel launch, a copy into memory we own): abort with the translated message.
#define MF_GPU_CHECK_(library, call)                                    \
  do {                                                                  \
    const ::absl::Status mf_gpu_status_ = MF_GPU_STATUS_(library, call); \
    MF_CHECK(mf_gpu_status_.ok()) << mf_gpu_status_.message();          \
  } while (0)
#define MF_CUDA_CHECK(call) MF_GPU_CHECK_(kCudaRuntime, call)
#define MF_CUBLAS_CHECK(call) MF_GPU_CHECK_(kCublas, call)
