// The cuDNN loader, its status translation and the SDPA graphs, checked without a GPU: every
// tensor and operation descriptor of the forward and backward graphs finalises in the installed
// cuDNN, and cuDNN's engines pass their support checks for them on an H100 described to cuDNN
// (deviceless heuristics). Skips where no cuDNN 9 library can be opened.
#include "ops/cuda/cudnn_graph.h"

#include <dlfcn.h>

#include <string>
#include <vector>

#include "ops/cuda/attention_cudnn.h"
#include "ops/cuda/cudnn_library.h"
#include "tests/testing/testing.h"

namespace moefold::ops::cuda {
namespace {

#define MF_REQUIRE_CUDNN()                                                 \
  do {                                                                     \
    if (!LoadCudnn().ok()) GTEST_SKIP() << LoadCudnn().status().message(); \
  } while (0)

TEST(CudnnLibraryTest, LoadsOrSaysWhy) {
  const absl::StatusOr<const CudnnLibrary*> lib = LoadCudnn();
  if (!lib.ok()) {
    EXPECT_EQ(lib.status().code(), absl::StatusCode::kUnavailable) << lib.status();
    EXPECT_NE(lib.status().message().find("libcudnn"), std::string::npos) << lib.status();
    return;
  }
  EXPECT_EQ((*lib)->version / 10000, 9);
  EXPECT_EQ(LoadCudnn().value(), *lib);  // loaded once
  EXPECT_EQ(CudnnRuntimeVersion().value(), CudnnVersionString((*lib)->version));
}

TEST(CudnnLibraryTest, VersionString) {
  EXPECT_EQ(CudnnVersionString(91900), "9.19.0");
  EXPECT_EQ(CudnnVersionString(90102), "9.1.2");
}

TEST(CudnnLibraryTest, StatusNamesTheCallAndMapsTheCategory) {
  MF_REQUIRE_CUDNN();
  const CudnnLibrary& lib = *LoadCudnn().value();
  EXPECT_OK(CudnnStatus(lib, CUDNN_STATUS_SUCCESS, "f()", "x.cc", 1));
  const absl::Status bad = CudnnStatus(lib, CUDNN_STATUS_BAD_PARAM, "f(a)", "x.cc", 12);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("f(a) failed at x.cc:12: CUDNN_STATUS_BAD_PARAM"), std::string::npos)
      << bad;
  EXPECT_EQ(CudnnStatus(lib, CUDNN_STATUS_NOT_SUPPORTED_SHAPE, "f", "x", 1).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(CudnnStatus(lib, CUDNN_STATUS_NOT_INITIALIZED, "f", "x", 1).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      CudnnStatus(lib, CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED, "f", "x", 1).code(),
      absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(CudnnStatus(lib, CUDNN_STATUS_EXECUTION_FAILED, "f", "x", 1).code(),
            absl::StatusCode::kInternal);
}

TEST(CudnnGraphTest, FirstFailureSticksAndNamesTheStep) {
  MF_REQUIRE_CUDNN();
  CudnnGraph g(*LoadCudnn().value());
  const int64_t a = g.Tensor("a", 1, CUDNN_DATA_FLOAT, {1, 1, 4, 8}, {32, 32, 8, 1});
  g.Tensor("a again", 1, CUDNN_DATA_FLOAT, {1, 1, 4, 8}, {32, 32, 8, 1});
  EXPECT_FALSE(g.status().ok());
  EXPECT_NE(g.status().message().find("a again"), std::string::npos) << g.status();
  const absl::Status first = g.status();
  g.Pointwise("later", CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, a, -1, -1, 99);
  EXPECT_EQ(g.status(), first);
}

TEST(CudnnGraphTest, UnknownTensorIsAnError) {
  MF_REQUIRE_CUDNN();
  CudnnGraph g(*LoadCudnn().value());
  const int64_t a = g.Tensor("a", 1, CUDNN_DATA_FLOAT, {1, 1, 4, 8}, {32, 32, 8, 1});
  g.Pointwise("exp", CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, a, -1, -1, 7);
  EXPECT_FALSE(g.status().ok());
  EXPECT_NE(g.status().message().find("uid 7"), std::string::npos) << g.status();
}

struct GraphCase {
  std::string name;
  AttentionDims dims;
};

class CudnnAttentionGraphTest : public ::testing::TestWithParam<GraphCase> {};

TEST_P(CudnnAttentionGraphTest, ForwardDescriptorsFinalise) {
  MF_REQUIRE_CUDNN();
  EXPECT_OK(CudnnAttentionCheckGraph(GetParam().dims, DType::kBF16, /*backward=*/false));
}

TEST_P(CudnnAttentionGraphTest, BackwardDescriptorsFinalise) {
  MF_REQUIRE_CUDNN();
  EXPECT_OK(CudnnAttentionCheckGraph(GetParam().dims, DType::kBF16, /*backward=*/true));
}

// An H100 SXM (sm_90) in the JSON form of cuDNN's device-properties descriptor (cuDNN 9.19's keys).
constexpr char kH100[] = R"({"maxGridSize": [2147483647, 65535, 65535],
  "maxBlockSize": [1024, 1024, 64], "regsPerBlock": 65536, "multiProcessorCount": 132,
  "warpSize": 32, "maxSharedMemoryPerBlock": 49152, "maxSharedMemoryPerBlockOptin": 232448,
  "reservedSharedMemoryPerBlock": 1024, "maxRegistersPerSM": 65536, "maxCtasPerSM": 32,
  "maxThreadsPerBlock": 1024, "maxThreadsPerSM": 2048, "pciDeviceId": 8960, "isTccDriver": 0,
  "supportCoopLaunch": 1, "totalGlobalMem": 85045231616, "smClockRateKHz": 1980000,
  "memClockRateKHz": 2619000, "l2CacheSize": 52428800, "cudaDeviceId": 0, "deviceVer": 900,
  "driverVer": 13000, "deviceName": "NVIDIA H100 80GB HBM3"})";

// cuDNN's engine checks open libcuda. Without a driver the toolkit's stub stands in: its soname is
// libcuda.so.1, so cuDNN's own dlopen finds the copy loaded here.
bool LibcudaLoaded() {
  if (dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL) != nullptr) return true;
#ifdef MOEFOLD_CUDA_STUB_LIBCUDA
  return dlopen(MOEFOLD_CUDA_STUB_LIBCUDA, RTLD_NOW | RTLD_GLOBAL) != nullptr;
#else
  return false;
#endif
}

TEST_P(CudnnAttentionGraphTest, EnginesTakeBothDirectionsOnH100) {
  MF_REQUIRE_CUDNN();
  if (LoadCudnn().value()->version < 91100) GTEST_SKIP() << "deviceless checks need cuDNN 9.11";
  if (!LibcudaLoaded()) GTEST_SKIP() << "no libcuda (driver or toolkit stub) to open";
  for (const bool backward : {false, true}) {
    const absl::StatusOr<std::vector<int64_t>> configs =
        CudnnAttentionSupportedConfigs(GetParam().dims, DType::kBF16, backward, kH100);
    if (!configs.ok() &&
        configs.status().message().find("device properties") != std::string::npos) {
      GTEST_SKIP() << "this cuDNN reads other device-property keys: " << configs.status();
    }
    ASSERT_OK(configs.status());
    ASSERT_EQ(configs->size(), 2u);
    EXPECT_GT((*configs)[0], 0) << (backward ? "backward" : "forward") << ", current form";
    EXPECT_GT((*configs)[1], 0) << (backward ? "backward" : "forward") << ", earlier form";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudnnAttentionGraphTest,
                         ::testing::Values(GraphCase{"d64_gqa", {2, 128, 4, 2, 64}},
                                           GraphCase{"d128_mha", {1, 256, 4, 4, 128}},
                                           GraphCase{"d128_mqa_s100", {2, 100, 8, 1, 128}},
                                           GraphCase{"mixtral_mini", {1, 4096, 16, 4, 128}}),
                         [](const ::testing::TestParamInfo<GraphCase>& info) {
                           return info.param.name;
                         });

TEST(CudnnAttentionSupportsTest, TakesBf16HeadDim64And128) {
  EXPECT_TRUE(CudnnAttentionSupports({1, 128, 4, 2, 64}, DType::kBF16));
  EXPECT_TRUE(CudnnAttentionSupports({1, 100, 4, 4, 128}, DType::kBF16));
  EXPECT_FALSE(CudnnAttentionSupports({1, 128, 4, 2, 64}, DType::kF32));
  EXPECT_FALSE(CudnnAttentionSupports({1, 128, 4, 2, 96}, DType::kBF16));
  EXPECT_FALSE(CudnnAttentionSupports({1, 1, 4, 2, 64}, DType::kBF16));
  EXPECT_FALSE(CudnnAttentionSupports({1, 128, 4, 3, 64}, DType::kBF16));
  EXPECT_FALSE(CudnnAttentionCheckGraph({1, 128, 4, 2, 64}, DType::kF32, false).ok());
}

}  // namespace
}  // namespace moefold::ops::cuda
