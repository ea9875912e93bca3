// Device queries for builds without the CUDA backend: there is never a usable GPU.
#include "ops/device_query.h"

namespace moefold::ops {

int CudaDeviceCount() { return 0; }

std::string CudaDeviceUuid(int) { return ""; }

}  // namespace moefold::ops
