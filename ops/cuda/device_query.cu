// CUDA device count through the runtime API; any error (no driver, no device, insufficient driver)
// means "no usable GPU" and is reported as 0.
#include <cuda_runtime.h>

#include "ops/device_query.h"

namespace moefold::ops {

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // reset the last-error state so later calls do not report this one
    return 0;
  }
  return count;
}

}  // namespace moefold::ops
