// Layouts for the parity tests of the vectorised GPU kernels: the same data at a 16-byte aligned
// address and one element past one, so an op runs both its 16-byte pack path and its scalar
// fallback (views made by Slice may start anywhere), and an exact comparison of the two results.
#pragma once

#include <cmath>
#include <cstring>
#include <vector>

#include "tests/testing/cuda_testing.h"

namespace moefold::ops::testing {

// Element offsets of a view into a fresh GPU allocation: 0 is 16-byte aligned (the allocator
// hands out aligned blocks); 1 is not, for every dtype of 2 or more bytes.
inline constexpr int64_t kAligned = 0;
inline constexpr int64_t kUnaligned = 1;

// `host` (a CPU f32 or i32 tensor) converted to `dtype`, on the GPU, `offset` elements into its
// own allocation.
inline Tensor ToGpuAt(const Tensor& host, DType dtype, int64_t offset) {
  const Tensor typed = host.dtype() == dtype ? host : host.To(dtype);
  Tensor flat = Tensor::Empty({host.numel() + offset}, dtype, ::moefold::testing::Gpu());
  Tensor view = flat.Slice(offset, offset + host.numel()).Reshape(host.shape());
  view.CopyFrom(typed);
  return view;
}

// A NaN-filled (−7 for integer dtypes) GPU output `offset` elements into its own allocation.
inline Tensor PoisonedAt(const Shape& shape, DType dtype, int64_t offset) {
  const int64_t n = NumElements(shape);
  return ::moefold::testing::Poisoned({n + offset}, dtype).Slice(offset, offset + n).Reshape(shape);
}

// The two tensors hold the same values, bit for bit as f32 (NaN equals NaN): what per-element
// arithmetic gives whichever way the elements were loaded.
inline ::testing::AssertionResult SameValues(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.ToVector(), y = b.ToVector();
  if (a.shape() != b.shape()) {
    return ::testing::AssertionFailure() << a.DebugString() << " vs " << b.DebugString();
  }
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::memcmp(&x[i], &y[i], sizeof(float)) != 0 && !(std::isnan(x[i]) && std::isnan(y[i]))) {
      return ::testing::AssertionFailure()
             << "element " << i << ": " << x[i] << " vs " << y[i] << " (" << a.DebugString() << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace moefold::ops::testing
