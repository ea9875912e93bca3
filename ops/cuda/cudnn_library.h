// cuDNN loaded at run time (internal to ops/cuda): dlopen of libcudnn.so.9 (or its graph library),
// so no binary links cuDNN and a machine without it keeps our own kernels. The table holds the few
// entry points moefold calls; cuDNN status codes become absl::Status here and nowhere else.
//
//   MF_ASSIGN_OR_RETURN(const CudnnLibrary* lib, LoadCudnn());
//   MF_CUDNN_RETURN_IF_ERROR(*lib, cudnnBackendFinalize(desc));  // "cudnnBackendFinalize(desc)
//                                                                 //  failed at f.cc:12: ..."
#pragma once

#include <cudnn_graph.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/status.h"

namespace moefold::ops::cuda {

// The resolved entry points. Fields are named after the C functions they point to, so a call
// through the table reads like the cuDNN documentation and the error macro can quote it.
struct CudnnLibrary {
  std::string path;     // the name dlopen resolved ("libcudnn.so.9", ...)
  int64_t version = 0;  // cudnnGetVersion(): major·10000 + minor·100 + patch (9.19.0 = 91900)

  decltype(&::cudnnGetVersion) cudnnGetVersion = nullptr;
  decltype(&::cudnnGetErrorString) cudnnGetErrorString = nullptr;
  // cuDNN's detailed text of the last failure on this thread (9.0+); may be null.
  decltype(&::cudnnGetLastErrorString) cudnnGetLastErrorString = nullptr;
  decltype(&::cudnnCreate) cudnnCreate = nullptr;
  decltype(&::cudnnDestroy) cudnnDestroy = nullptr;
  decltype(&::cudnnSetStream) cudnnSetStream = nullptr;
  decltype(&::cudnnBackendCreateDescriptor) cudnnBackendCreateDescriptor = nullptr;
  decltype(&::cudnnBackendDestroyDescriptor) cudnnBackendDestroyDescriptor = nullptr;
  decltype(&::cudnnBackendSetAttribute) cudnnBackendSetAttribute = nullptr;
  decltype(&::cudnnBackendGetAttribute) cudnnBackendGetAttribute = nullptr;
  decltype(&::cudnnBackendFinalize) cudnnBackendFinalize = nullptr;
  decltype(&::cudnnBackendExecute) cudnnBackendExecute = nullptr;
};

// Loads cuDNN once per process (thread-safe; the outcome, success or not, is kept). Tries
// $MOEFOLD_CUDNN_LIBRARY when set, then libcudnn.so.9, then libcudnn_graph.so.9. Unavailable when
// none opens (with dlopen's reasons), FailedPrecondition when a symbol is missing or the runtime is
// not cuDNN 9.
absl::StatusOr<const CudnnLibrary*> LoadCudnn();

// "9.19.0" for 91900.
std::string CudnnVersionString(int64_t version);

// OkStatus for CUDNN_STATUS_SUCCESS; otherwise "CALL failed at FILE:LINE: NAME (cuDNN's last error
// text)" with the category's code: BAD_PARAM → InvalidArgument, NOT_SUPPORTED → Unimplemented,
// allocation failures → ResourceExhausted, NOT_INITIALIZED (no GPU, driver) → FailedPrecondition,
// the rest → Internal.
absl::Status CudnnStatus(const CudnnLibrary& lib, cudnnStatus_t code, const char* call,
                         const char* file, int line);

}  // namespace moefold::ops::cuda

#define MF_CUDNN_STATUS_(lib, call) \
  ::moefold::ops::cuda::CudnnStatus((lib), (lib).call, #call, __FILE__, __LINE__)
#define MF_CUDNN_RETURN_IF_ERROR(lib, call) MF_RETURN_IF_ERROR(MF_CUDNN_STATUS_(lib, call))
