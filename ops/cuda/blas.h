// cuBLASLt / cuBLAS plumbing shared by the dense and the grouped GEMM (internal to ops/cuda):
// row-major problems mapped onto the libraries' column-major calls, per-device handles, per-stream
// workspaces and a cache of chosen algorithms. No CUDA types here.
#pragma once

#include <cstdint>

#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::ops::cuda {

// C = alpha·op(A)·op(B) + beta·C (+ bias[j] on every row's column j), all row-major on the GPU.
// op(A) is m×k; A is stored m×k (k×m when trans_a) with row stride lda; likewise B, C (ldc).
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* c = nullptr;
  int64_t ldc = 0;
  DType ab_dtype = DType::kF32, c_dtype = DType::kF32;
  float alpha = 1.0f, beta = 0.0f;
  const void* bias = nullptr;  // (n) in c_dtype, or nullptr
};

// One cuBLASLt matmul on `stream` (f32 accumulation; f32 inputs stay f32, no TF32). k == 0 scales
// C.
void LtMatmul(const GemmArgs& args, const Stream& stream);

// The cuBLAS handle of the stream's GPU, bound to `stream` and its workspace (cublasHandle_t).
void* BlasHandleFor(const Stream& stream);

}  // namespace moefold::ops::cuda
