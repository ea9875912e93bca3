// Test of CudaDeviceCount: it answers without crashing on any machine; skips where there is no GPU.
#include "ops/device_query.h"

#include "gtest/gtest.h"

namespace moefold::ops {
namespace {

TEST(DeviceQueryTest, CountIsStableAndSkipsWithoutGpu) {
  const int count = CudaDeviceCount();
  ASSERT_GE(count, 0);
  EXPECT_EQ(CudaDeviceCount(), count);  // a second query (after any error was cleared) agrees
  if (count == 0) GTEST_SKIP() << "no CUDA device (or CUDA backend not built)";
  EXPECT_LE(count, 64);  // a sane count from a real driver
}

}  // namespace
}  // namespace moefold::ops
