// NVTX ranges (the markers Nsight Systems draws on its timeline) behind plain functions, so no
// public header includes the NVTX headers. CUDA builds use the toolkit's header-only NVTX v3
// (core/nvtx.cc); CPU builds link core/nvtx_stub.cc, where every call is a no-op.
#pragma once

namespace moefold::nvtx {

// True when a tool (Nsight Systems or Compute) injected itself into the process through
// NVTX_INJECTION64_PATH; read once. Always false in CPU builds.
bool ToolAttached();
// Opens a range on the calling thread (NVTX copies `name`); ranges nest and close in reverse.
void PushRange(const char* name);
void PopRange();

}  // namespace moefold::nvtx
