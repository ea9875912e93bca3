// How many CUDA devices this process can use. Lets tests and the launcher decide between the CUDA
// and the CPU path without including CUDA headers; builds without CUDA get a stub returning 0.
#pragma once

#include <string>

namespace moefold::ops {

// Number of visible CUDA devices; 0 when the CUDA backend is not built, or when there is no driver
// or no GPU (cudaGetDeviceCount's error is swallowed: "no GPU" is a normal answer, not a failure).
int CudaDeviceCount();

// The physical identity of visible device `device` (0 ≤ device < CudaDeviceCount()) as nvidia-smi
// prints it, "GPU-" and its UUID: two ranks whose CUDA_VISIBLE_DEVICES differ can tell whether
// they drive the same GPU. Empty when it cannot be queried (no CUDA backend, no such device).
std::string CudaDeviceUuid(int device);

}  // namespace moefold::ops
