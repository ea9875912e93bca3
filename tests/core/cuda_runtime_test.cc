// Tests of the CUDA runtime in core/: error translation, device selection, tensor copies and
// conversions on the GPU, the caching allocator after warm-up, streams, events, pinned memory.
// GPU tests skip without a GPU; the error and no-GPU paths run everywhere.
#include <cstdlib>

#include "core/allocator.h"
#include "core/caching_allocator.h"
#include "core/cuda_runtime.h"
#include "core/gpu_error.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold {
namespace {

using ::moefold::testing::Gpu;
using ::moefold::testing::RandomNormal;

#ifdef MOEFOLD_HAVE_CUDA
TEST(GpuErrorTest, NamesTheCallTheLineAndTheLibraryMessage) {
  EXPECT_TRUE(GpuStatus(GpuLibrary::kCudaRuntime, 0, "cudaFoo()", "f.cc", 1).ok());
  const absl::Status oom =
      GpuStatus(GpuLibrary::kCudaRuntime, /*cudaErrorMemoryAllocation=*/2, "cudaMalloc(&p, n)",
                "core/x.cc", 42);
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(oom.message().find("cudaMalloc(&p, n) failed at core/x.cc:42"), std::string::npos)
      << oom;
  EXPECT_NE(oom.message().find("cudaErrorMemoryAllocation"), std::string::npos) << oom;
  const absl::Status blas = GpuStatus(GpuLibrary::kCublas, /*CUBLAS_STATUS_NOT_SUPPORTED=*/15,
                                      "cublasLtMatmul(...)", "ops/cuda/gemm.cc", 7);
  EXPECT_EQ(blas.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(blas.message().find("cublasLtMatmul(...) failed at ops/cuda/gemm.cc:7"),
            std::string::npos)
      << blas;
}
#endif

TEST(CudaRuntimeTest, LocalRankComesFromTheLauncher) {
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  setenv("SLURM_LOCALID", "3", 1);
  EXPECT_EQ(LocalRankFromEnvironment(), 3);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);  // checked first
  EXPECT_EQ(LocalRankFromEnvironment(), 1);
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  unsetenv("SLURM_LOCALID");
}

TEST(CudaRuntimeTest, DeviceSelectionWithoutGpuIsFailedPrecondition) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a GPU is present";
  const absl::StatusOr<Device> device = SelectCudaDevice(0);
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SelectCudaDevice(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CudaRuntimeDeathTest, GpuTensorWithoutGpuNamesTheReason) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a GPU is present";
  const char* reason = cuda::BackendBuilt() ? "does not exist" : "built without the CUDA backend";
  EXPECT_DEATH(Tensor::Empty({4}, DType::kF32, Device::Cuda(0)), reason);
}

TEST(CudaRuntimeTest, SelectsTheDeviceOfTheLocalRank) {
  MF_REQUIRE_GPU();
  const int count = cuda::DeviceCount();
  const absl::StatusOr<Device> device = SelectCudaDevice(count);  // wraps around
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(*device, Device::Cuda(0));
  EXPECT_EQ(*cuda::CurrentDevice(), 0);
}

TEST(CudaRuntimeTest, CopiesRoundTripEveryDType) {
  MF_REQUIRE_GPU();
  const Tensor host = RandomNormal({37, 5}, 11, 3.0f);
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kFp8E4M3, DType::kI32}) {
    const Tensor typed = host.To(dtype);
    const Tensor gpu = typed.To(Gpu());
    EXPECT_EQ(gpu.device(), Gpu());
    EXPECT_EQ(gpu.ToVector(), typed.ToVector()) << DTypeName(dtype);
    Tensor back = Tensor::Empty(typed.shape(), dtype);
    back.CopyFrom(gpu);
    EXPECT_EQ(back.ToVector(), typed.ToVector()) << DTypeName(dtype);
    const Tensor clone = gpu.Clone();  // device to device
    EXPECT_EQ(clone.device(), Gpu());
    EXPECT_EQ(clone.ToVector(), typed.ToVector()) << DTypeName(dtype);
  }
}

TEST(CudaRuntimeTest, SlicesZerosAndFillsOnTheDevice) {
  MF_REQUIRE_GPU();
  const Tensor host = RandomNormal({6, 4}, 12);
  Tensor gpu = host.To(Gpu());
  EXPECT_EQ(gpu.Slice(2, 4).ToVector(), host.Slice(2, 4).ToVector());
  Tensor rows = gpu.Slice(1, 3);
  rows.SetZero();
  std::vector<float> expected = host.ToVector();
  for (int i = 4; i < 12; ++i) expected[i] = 0.0f;
  EXPECT_EQ(gpu.ToVector(), expected);
  Tensor filled = Tensor::Empty({3, 3}, DType::kBF16, Gpu());
  filled.Fill(1.5f);
  EXPECT_EQ(filled.ToVector(), std::vector<float>(9, 1.5f));
  EXPECT_EQ(Tensor::Zeros({5}, DType::kF32, Gpu()).ToVector(), std::vector<float>(5, 0.0f));
}

TEST(CudaRuntimeTest, DeviceConversionsMatchTheCpuBitForBit) {
  MF_REQUIRE_GPU();
  Tensor host = RandomNormal({4096}, 13, 100.0f);
  host.data<float>()[0] = 1e6f;  // saturates fp8
  host.data<float>()[1] = -1e6f;
  host.data<float>()[2] = 1.00390625f;  // a bf16 tie: rounds to even
  const Tensor gpu = host.To(Gpu());
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kFp8E4M3, DType::kFp8E5M2, DType::kI32}) {
    EXPECT_EQ(gpu.To(dtype).ToVector(), host.To(dtype).ToVector()) << DTypeName(dtype);
    EXPECT_EQ(gpu.To(dtype).To(DType::kF32).ToVector(), host.To(dtype).To(DType::kF32).ToVector())
        << DTypeName(dtype);
  }
}

TEST(CudaRuntimeTest, AllocatorStopsAllocatingAfterWarmUpAndCountsBytes) {
  MF_REQUIRE_GPU();
  auto* cache = dynamic_cast<CachingAllocator*>(&AllocatorFor(Gpu()));
  ASSERT_NE(cache, nullptr);
  const size_t before = cache->current_bytes();
  int64_t raw_after_warm_up = 0;
  for (int step = 0; step < 4; ++step) {
    Tensor a = Tensor::Empty({1024, 1024}, DType::kBF16, Gpu());
    Tensor b = Tensor::Empty({333}, DType::kF32, Gpu());
    Tensor c = Tensor::Empty({3, 1 << 20}, DType::kF32, Gpu());
    EXPECT_EQ(cache->current_bytes(), before + a.nbytes() + b.nbytes() + c.nbytes());
    EXPECT_GE(cache->peak_bytes(), cache->current_bytes());
    if (step == 0) raw_after_warm_up = cache->raw_allocations();
  }
  EXPECT_EQ(cache->raw_allocations(), raw_after_warm_up);
  EXPECT_EQ(cache->current_bytes(), before);
}

TEST(CudaRuntimeTest, StreamsEventsAndPinnedCopies) {
  MF_REQUIRE_GPU();
  absl::StatusOr<Stream> stream = Stream::Create(Gpu());
  ASSERT_TRUE(stream.ok()) << stream.status();
  absl::StatusOr<Event> start = Event::Create(Gpu(), /*timing=*/true);
  absl::StatusOr<Event> end = Event::Create(Gpu(), /*timing=*/true);
  ASSERT_TRUE(start.ok() && end.ok());
  const Tensor host = RandomNormal({1 << 16}, 14);
  Tensor pinned = Tensor::EmptyPinned(host.shape(), DType::kF32);
  EXPECT_TRUE(pinned.device().is_cpu());
  pinned.CopyFrom(host);
  Tensor gpu = Tensor::Empty(host.shape(), DType::kF32, Gpu());
  Tensor back = Tensor::EmptyPinned(host.shape(), DType::kF32);
  ASSERT_TRUE(start->Record(*stream).ok());
  gpu.CopyFromAsync(pinned, *stream);
  back.CopyFromAsync(gpu, *stream);
  ASSERT_TRUE(end->Record(*stream).ok());
  ASSERT_TRUE(end->Synchronize().ok());
  EXPECT_TRUE(*end->Query());
  absl::StatusOr<float> ms = Event::ElapsedMs(*start, *end);
  ASSERT_TRUE(ms.ok()) << ms.status();
  EXPECT_GE(*ms, 0.0f);
  EXPECT_EQ(back.ToVector(), host.ToVector());
  // The default stream waits for an event of the side stream.
  ASSERT_TRUE(DefaultStream(Gpu()).Wait(*end).ok());
  DefaultStream(Gpu()).Synchronize();
}

TEST(CudaRuntimeTest, RecordedStreamDefersReuse) {
  MF_REQUIRE_GPU();
  absl::StatusOr<Stream> stream = Stream::Create(Gpu());
  ASSERT_TRUE(stream.ok()) << stream.status();
  auto* cache = dynamic_cast<CachingAllocator*>(&AllocatorFor(Gpu()));
  ASSERT_NE(cache, nullptr);
  const size_t before = cache->current_bytes();
  {
    Tensor t = Tensor::Zeros({1 << 20}, DType::kF32, Gpu());
    t.RecordStream(*stream);
  }
  EXPECT_EQ(cache->current_bytes(), before);
  stream->Synchronize();
}

TEST(CudaRuntimeTest, CpuEventsTimeWithTheHostClock) {
  absl::StatusOr<Event> start = Event::Create(Device::Cpu(), true);
  absl::StatusOr<Event> end = Event::Create(Device::Cpu(), true);
  ASSERT_TRUE(start.ok() && end.ok());
  ASSERT_TRUE(start->Record(CpuStream()).ok());
  ASSERT_TRUE(end->Record(CpuStream()).ok());
  EXPECT_TRUE(*end->Query());
  EXPECT_GE(*Event::ElapsedMs(*start, *end), 0.0f);
  EXPECT_TRUE(CpuStream().Wait(*end).ok());
}

}  // namespace
}  // namespace moefold
