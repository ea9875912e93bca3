// FP8 recipe state: the delayed-scaling amax histories and scales of a group of tensors, updated
// once per step (amaxes max-reduced over the ranks that share the tensors, then one fused
// ops::Fp8UpdateScales), and the current-scaling cast (amax now → scale → cast). Invariant: every
// rank sharing a tensor holds the same history and scale after Update, so every layout quantises
// identically.
//
//   ASSIGN_OR_RETURN(auto recipe, Fp8DelayedScaling::Create(/*num_tensors=*/3, {}, device));
//   Tensor amax = recipe.amax(1);                       // (1) view: the ops accumulate into it
//   ops::CastTransposeAmax(x, recipe.scale(1), &y, &y_t, &amax, stream);
//   MF_RETURN_IF_ERROR(recipe.Update(tp_comm, stream)); // once per step, after the backward
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/device.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "parallel/communicator.h"

namespace moefold::optim {

struct Fp8DelayedScalingOptions {
  int amax_history = 16;           // L ≥ 1 steps of amax per tensor
  DType format = DType::kFp8E4M3;  // kFp8E4M3 or kFp8E5M2: one format per group
};

// Delayed scaling of T tensors (one group: e.g. a layer's forward operands in E4M3, or its
// gradients in E5M2). Tensors, all f32 on `device`:
//   amaxes     (T)     this step's max|x| per tensor, accumulated by the ops, zeroed by Update;
//   history    (L, T)  row 0 the newest step;
//   scales     (T)     fp8_max / max over the history (1 until a positive finite amax is seen);
//   scale_invs (T)     1 / scales, what a GEMM multiplies its result by.
// Checkpoints save and restore these four tensors (their order of tensors is the caller's).
class Fp8DelayedScaling {
 public:
  // InvalidArgument when amax_history < 1, num_tensors < 0 or the format is not an FP8 dtype.
  static absl::StatusOr<Fp8DelayedScaling> Create(int64_t num_tensors,
                                                  const Fp8DelayedScalingOptions& options,
                                                  const Device& device = Device::Cpu());

  int64_t num_tensors() const { return amaxes_.dim(0); }
  const Fp8DelayedScalingOptions& options() const { return options_; }
  float fp8_max() const;

  // (1) f32 views of tensor i's entries (they share the group's storage).
  Tensor amax(int64_t i) const { return amaxes_.Slice(i, i + 1); }
  Tensor scale(int64_t i) const { return scales_.Slice(i, i + 1); }
  Tensor scale_inv(int64_t i) const { return scale_invs_.Slice(i, i + 1); }

  Tensor& amaxes() { return amaxes_; }
  Tensor& history() { return history_; }
  Tensor& scales() { return scales_; }
  Tensor& scale_invs() { return scale_invs_; }

  // The step's update: amaxes = max over the members of `comm` (the ranks that share these
  // tensors; nullptr or a group of one for none), then ops::Fp8UpdateScales: roll the histories,
  // insert and zero the amaxes, recompute the scales (a zero or non-finite history max keeps the
  // previous scale). Returns the communicator's error (the state is then unchanged).
  absl::Status Update(parallel::Communicator* comm, Stream& stream);

 private:
  Fp8DelayedScaling(const Fp8DelayedScalingOptions& options, int64_t num_tensors,
                    const Device& device);

  Fp8DelayedScalingOptions options_;
  Tensor amaxes_, history_, scales_, scale_invs_;
};

// Current scaling of one tensor: amax = max|x| now (max-reduced over `comm` when given), scale =
// fp8_max / amax (scale keeps its value where amax is zero or not finite: initialise it, e.g. to
// 1), scale_inv = 1 / scale, then y = fp8(x·scale) and y_t its transpose as ops::CastTransposeAmax.
// x (M, N) f32 or bf16; y (M, N) and y_t (N, M) in one FP8 dtype, either may be null but not both;
// scale and scale_inv (1) f32, updated in place; all on x's device. Returns the communicator's
// error.
absl::Status CastCurrentScaling(const Tensor& x, parallel::Communicator* comm, Tensor* y,
                                Tensor* y_t, Tensor* scale, Tensor* scale_inv, Stream& stream);

}  // namespace moefold::optim
