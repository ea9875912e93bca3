// CPU stream: work already happened when the op returned.
#include "core/stream.h"

#include "core/status.h"

namespace moefold {

void Stream::Synchronize() {
  MF_CHECK(device_.is_cpu()) << "CUDA streams are synchronised by the CUDA backend";
}

Stream& CpuStream() {
  static Stream* stream = new Stream(Device::Cpu());
  return *stream;
}

}  // namespace moefold
