// The run-time cuDNN loader and the one translation of cuDNN status codes (see cudnn_library.h).
// The library handle is never closed: plans and handles made from it live until the process ends.
#include "ops/cuda/cudnn_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace moefold::ops::cuda {
namespace {

// Resolves `name` into `*fn`; false when missing.
template <typename Fn>
bool Resolve(void* handle, const char* name, Fn* fn) {
  *fn = reinterpret_cast<Fn>(dlsym(handle, name));
  return *fn != nullptr;
}

absl::StatusOr<CudnnLibrary> Open() {
  std::vector<std::string> names;
  if (const char* env = std::getenv("MOEFOLD_CUDNN_LIBRARY"); env != nullptr && *env != '\0') {
    names.emplace_back(env);
  }
  // libcudnn.so.9 is a thin front that loads the sub-libraries; the graph library alone also
  // exports every function used here (and loads the engine libraries itself).
  names.emplace_back("libcudnn.so.9");
  names.emplace_back("libcudnn_graph.so.9");
  std::vector<std::string> failures;
  void* handle = nullptr;
  CudnnLibrary lib;
  for (const std::string& name : names) {
    handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) {
      lib.path = name;
      break;
    }
    const char* error = dlerror();
    failures.push_back(error != nullptr ? error : name);
  }
  if (handle == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cuDNN 9 not found (", absl::StrJoin(failures, "; "),
                     "); put its lib directory on LD_LIBRARY_PATH or name the file in "
                     "MOEFOLD_CUDNN_LIBRARY"));
  }
  std::vector<std::string> missing;
#define MF_RESOLVE_(fn) \
  if (!Resolve(handle, #fn, &lib.fn)) missing.push_back(#fn)
  MF_RESOLVE_(cudnnGetVersion);
  MF_RESOLVE_(cudnnGetErrorString);
  MF_RESOLVE_(cudnnCreate);
  MF_RESOLVE_(cudnnDestroy);
  MF_RESOLVE_(cudnnSetStream);
  MF_RESOLVE_(cudnnBackendCreateDescriptor);
  MF_RESOLVE_(cudnnBackendDestroyDescriptor);
  MF_RESOLVE_(cudnnBackendSetAttribute);
  MF_RESOLVE_(cudnnBackendGetAttribute);
  MF_RESOLVE_(cudnnBackendFinalize);
  MF_RESOLVE_(cudnnBackendExecute);
#undef MF_RESOLVE_
  // Optional: only the message of a failure gets poorer without it.
  Resolve(handle, "cudnnGetLastErrorString", &lib.cudnnGetLastErrorString);
  if (!missing.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        lib.path, " lacks ", absl::StrJoin(missing, ", "), " (not a cuDNN 9 library?)"));
  }
  lib.version = static_cast<int64_t>(lib.cudnnGetVersion());
  if (lib.version / 10000 != 9) {
    return absl::FailedPreconditionError(
        absl::StrCat(lib.path, " reports cuDNN ", CudnnVersionString(lib.version),
                     "; moefold's graphs are written for cuDNN 9"));
  }
  return lib;
}

absl::StatusCode CodeOf(cudnnStatus_t code) {
  switch (code) {
    case CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED:
    case CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED:
      return absl::StatusCode::kResourceExhausted;
    default:
      break;
  }
  // cuDNN 9 codes are category·1000 + detail.
  switch (static_cast<int>(code) / 1000) {
    case 1:
      return absl::StatusCode::kFailedPrecondition;
    case 2:
      return absl::StatusCode::kInvalidArgument;
    case 3:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::StatusOr<const CudnnLibrary*> LoadCudnn() {
  // A function-local static: initialised once, thread-safe, never destroyed (plans outlive main).
  static const absl::StatusOr<CudnnLibrary>* const loaded =
      new absl::StatusOr<CudnnLibrary>(Open());
  if (!loaded->ok()) return loaded->status();
  return &loaded->value();
}

std::string CudnnVersionString(int64_t version) {
  return absl::StrCat(version / 10000, ".", version / 100 % 100, ".", version % 100);
}

absl::Status CudnnStatus(const CudnnLibrary& lib, cudnnStatus_t code, const char* call,
                         const char* file, int line) {
  if (code == CUDNN_STATUS_SUCCESS) return absl::OkStatus();
  std::string message =
      absl::StrCat(call, " failed at ", file, ":", line, ": ", lib.cudnnGetErrorString(code), " (",
                   static_cast<int>(code), ")");
  if (lib.cudnnGetLastErrorString != nullptr) {
    char detail[1024] = {};
    lib.cudnnGetLastErrorString(detail, sizeof(detail));
    if (detail[0] != '\0') absl::StrAppend(&message, ": ", detail);
  }
  return absl::Status(CodeOf(code), message);
}

}  // namespace moefold::ops::cuda
