// NVTX in a build without CUDA: no tool can listen, so ranges are no-ops.
#include "core/nvtx.h"

namespace moefold::nvtx {

bool ToolAttached() { return false; }
void PushRange(const char*) {}
void PopRange() {}

}  // namespace moefold::nvtx
