// The peak an MFU is measured against (docs/FORMULAS.md §10): per device, in dense TFLOP/s of the
// run's compute dtype. train.peak_tflops overrides; on a GPU the table below keyed on the device
// name (the vendor's dense figure without sparsity); on the CPU a short measured GEMM probe, named
// as such, so CPU "MFU" says how close the step comes to the BLAS this rank gets.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/device.h"
#include "core/dtype.h"

namespace moefold::train {

struct Peak {
  double tflops = 0;   // per device; 0 = unknown (MFU is then not reported)
  std::string source;  // "train.peak_tflops", "table: NVIDIA H100 80GB HBM3 (bf16)", "cpu gemm probe ..."
};

// The dense tensor-core peak of a GPU by its name for `dtype` (bf16/f16, fp8 e4m3/e5m2; f32 =
// the non-tensor FP32 rate), 0 when the name or dtype is not in the table. H100 SXM / H200 989
// TFLOP/s bf16 (1979 fp8, 67 f32), H100 PCIe 756 (1513, 51), H800 as H100 SXM, A100 312 (no fp8,
// 19.5), L40S 362 (733, 91.6), B200 2250 (4500, 80).
double GpuPeakTflops(absl::string_view device_name, DType dtype);

// Times square f32 GEMMs of size n on this thread's BLAS for about `seconds` and returns the best
// rate in TFLOP/s (the probe takes the run's thread setting, as the ranks do).
double CpuGemmProbeTflops(int n = 512, double seconds = 0.2);

// The run's peak: `configured` > 0 wins; else the GPU table for `device`; else the CPU probe.
Peak ResolvePeak(float configured, const Device& device, DType dtype);

}  // namespace moefold::train
