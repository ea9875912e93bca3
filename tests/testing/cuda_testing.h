// Helpers for GPU tests: skip without a GPU, move f32 test data to the device in a dtype, and the
// CUDA-vs-CPU parity check with the tolerances of docs/ARCHITECTURE.md §10.
#pragma once

#include <cmath>
#include <string>

#include "core/cuda_runtime.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

// Skips the test (cleanly, as passed-with-skip) when no GPU is usable or CUDA is not built.
#define MF_REQUIRE_GPU()                                            \
  do {                                                              \
    if (::moefold::cuda::DeviceCount() == 0) {                      \
      GTEST_SKIP() << "no CUDA device (or CUDA backend not built)"; \
    }                                                               \
  } while (0)

namespace moefold::testing {

inline Device Gpu() { return Device::Cuda(0); }

// `host` (a CPU f32 or i32 tensor) rounded to `dtype` and copied to cuda:0.
inline Tensor ToGpu(const Tensor& host, DType dtype) {
  return (host.dtype() == dtype ? host : host.To(dtype)).To(Gpu());
}
inline Tensor ToGpu(const Tensor& host) { return host.To(Gpu()); }

// `host` rounded through `dtype` and back to f32 on the CPU: the input a kernel storing `dtype`
// sees, for the CPU reference.
inline Tensor RoundedTo(const Tensor& host, DType dtype) {
  return dtype == DType::kF32 ? host.Clone() : host.To(dtype).To(DType::kF32);
}

// A GPU tensor filled with NaN: an element the op fails to write fails the parity check.
inline Tensor Poisoned(const Shape& shape, DType dtype) {
  Tensor t = Tensor::Empty(shape, dtype, Gpu());
  if (IsFloatingPoint(dtype)) {
    t.Fill(NAN);
  } else {
    t.Fill(-7.0f);
  }
  return t;
}

// The default stream of cuda:0, where the parity tests run their ops.
inline Stream& GpuStream() { return DefaultStream(Gpu()); }

// Parameter names for dtype-parameterised tests ("f32", "bf16").
struct DTypeName {
  std::string operator()(const ::testing::TestParamInfo<DType>& info) const {
    return std::string(::moefold::DTypeName(info.param));
  }
};

// Any-device tensor as a CPU f32 tensor.
inline Tensor ToHostF32(const Tensor& t) {
  Tensor host = t.To(Device::Cpu());
  return host.dtype() == DType::kF32 ? host : host.To(DType::kF32);
}

// Parity of a GPU result with its CPU reference at `dtype`'s tolerance tol (f32 1e-5, bf16 1e-2):
// relative L2 error ‖a − e‖/‖e‖ ≤ tol and every element within tol·(|e| + max|e|). NaN fails.
// `scale` widens tol for results that sum many rounded terms.
::testing::AssertionResult ParityNear(const Tensor& actual, const Tensor& expected, DType dtype,
                                      double scale = 1.0);
#define EXPECT_PARITY(actual, expected, dtype) \
  EXPECT_TRUE(::moefold::testing::ParityNear((actual), (expected), (dtype)))

}  // namespace moefold::testing
