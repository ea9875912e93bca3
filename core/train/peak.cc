#include "core/train/peak.h"

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "core/cuda_runtime.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "ops/gemm.h"

namespace moefold::train {
namespace {

struct PeakRow {
  const char* name;  // matched as a substring of the device name, first match wins
  double bf16, fp8, f32;
};

// Vendor dense figures (no structured sparsity). Order matters: the PCIe H100 and GH200 before
// the generic "H100".
constexpr PeakRow kPeaks[] = {
    {"H100 PCIe", 756, 1513, 51},  {"H100 NVL", 835, 1671, 60},  {"H200", 989, 1979, 67},
    {"GH200", 989, 1979, 67},      {"H100", 989, 1979, 67},      {"H800", 989, 1979, 67},
    {"B200", 2250, 4500, 80},      {"A100", 312, 0, 19.5},       {"A800", 312, 0, 19.5},
    {"L40S", 362, 733, 91.6},
};

}  // namespace

double GpuPeakTflops(absl::string_view device_name, DType dtype) {
  for (const PeakRow& row : kPeaks) {
    if (!absl::StrContains(device_name, row.name)) continue;
    switch (dtype) {
      case DType::kBF16:
      case DType::kF16: return row.bf16;
      case DType::kFp8E4M3:
      case DType::kFp8E5M2: return row.fp8;
      case DType::kF32: return row.f32;
      default: return 0;
    }
  }
  return 0;
}

double CpuGemmProbeTflops(int n, double seconds) {
  Tensor a = Tensor::Empty({n, n}, DType::kF32), b = Tensor::Empty({n, n}, DType::kF32);
  Tensor c = Tensor::Zeros({n, n}, DType::kF32);
  a.Fill(0.5f);
  b.Fill(0.25f);
  const double flops = 2.0 * n * n * n;
  double best = 0, spent = 0;
  for (int i = 0; i < 100 && (i < 2 || spent < seconds); ++i) {
    const auto start = std::chrono::steady_clock::now();
    ops::Gemm(a, false, b, false, 1.0f, 0.0f, &c, CpuStream());
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spent += s;
    if (i > 0 && s > 0) best = std::max(best, flops / s / 1e12);  // the first call warms up
  }
  return best;
}

Peak ResolvePeak(float configured, const Device& device, DType dtype) {
  Peak peak;
  if (configured > 0) {
    peak.tflops = configured;
    peak.source = "train.peak_tflops";
    return peak;
  }
  if (device.is_cuda()) {
    auto info = cuda::GetDeviceInfo(device.index);
    if (info.ok()) {
      peak.tflops = GpuPeakTflops(info->name, dtype);
      peak.source = peak.tflops > 0
                        ? absl::StrFormat("table: %s (%s)", info->name, DTypeName(dtype))
                        : absl::StrFormat("%s is not in the peak table: set train.peak_tflops",
                                          info->name);
    }
    return peak;
  }
  peak.tflops = CpuGemmProbeTflops();
  peak.source = "cpu gemm probe (512³ f32 on this rank's BLAS threads)";
  return peak;
}

}  // namespace moefold::train
