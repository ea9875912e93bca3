// CUDA device count and identity through the runtime API; any error (no driver, no device,
// insufficient driver) means "no usable GPU" and is reported as 0 (or an empty identity).
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

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

std::string CudaDeviceUuid(int device) {
  cudaDeviceProp prop;
  if (device < 0 || device >= CudaDeviceCount() ||
      cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return "";
  }
  const auto* b = reinterpret_cast<const unsigned char*>(prop.uuid.bytes);
  char text[64];
  std::snprintf(text, sizeof(text),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                b[14], b[15]);
  return text;
}

}  // namespace moefold::ops
