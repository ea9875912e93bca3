// What one forward/backward of a micro-batch needs besides parameters: the stream (and with it the
// device), the activation dtype, the batch, and how the backward is seeded. Saved activations (the
// tape) live in each layer's `Saved` struct, which the caller keeps per micro-batch in flight (the
// pipeline schedule decides how many).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/profiler.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::model {

class Fp8Training;
class RecomputeRows;

// A micro-batch of B sequences of S tokens, on the host: tokens (B, S) i32 inputs, targets (B, S)
// i32 next tokens (-1 = ignored), positions (S) i32 global positions (0..S-1 on one rank; context
// parallelism passes its chunks' offsets). The kernels read the `on_device` copies
// (WithDeviceCopies).
struct MicroBatch {
  Tensor tokens;
  Tensor targets;
  Tensor positions;
  struct DeviceCopies {
    Tensor tokens;         // (B, S) i32
    Tensor targets;        // (B, S) i32
    Tensor row_positions;  // (B·S) i32: positions repeated for every sequence
  };
  DeviceCopies on_device;  // undefined until made
  int64_t batch() const { return tokens.dim(0); }
  int64_t seq_len() const { return tokens.dim(1); }
};

// `batch` with on_device made for the stream's device (uploaded on it, or views of the host
// tensors on the CPU); already made ones are kept, so a trainer uploads once per micro-batch.
MicroBatch WithDeviceCopies(const MicroBatch& batch, const Stream& stream);

// Sums a forward pass adds up on the compute device; the trainer reads them once per step, so
// no layer waits for the device to learn a loss.
enum DeviceSum : int {
  kAuxLossSum = 0,     // Σ over MoE layers and aux units of the aux loss
  kZLossSum = 1,       // Σ over MoE layers and tokens of z_coeff · lse²
  kSampleLossSum = 2,  // Σ over sequences of their mean token cross entropy (when not on the host)
  kNumDeviceSums = 3,
};

struct StepContext {
  Stream* stream = nullptr;  // the compute stream; its device is where the activations live
  // Activations (x, q/k/v, gate/up, logits and their gradients) are f32 or bf16; statistics (rstd,
  // lse, router logits and weights, losses) stay f32 and parameter gradients accumulate in f32
  // (docs/ARCHITECTURE.md §2).
  DType act_dtype = DType::kF32;
  // Called during Backward each time the parameters with ParameterSet indices [first, last) have
  // received their last gradient contribution of this backward (data parallelism starts reducing
  // their buckets while the rest of the backward runs). Unset: not called.
  std::function<void(int64_t first, int64_t last)> grads_ready = nullptr;
  // (kNumDeviceSums) f32 on the compute device that forward passes add to (ResetDeviceSums makes
  // it); required by every forward.
  Tensor device_sums = Tensor();
  // Whether the head copies each micro-batch's per-sample losses to the host (ForwardStats::
  // sample_losses; a wait): the reweighting needs them before the backward. Otherwise their sum
  // goes to device_sums[kSampleLossSum] and the backward is seeded uniformly.
  bool sample_losses_on_host = true;
  // Op-family timing of profiled steps (core/profiler.h); null = off.
  Profiler* profiler = nullptr;
  // The FP8 recipe of the projections' GEMMs (core/model/fp8_linear.h); null = bf16/f32 GEMMs.
  Fp8Training* fp8 = nullptr;
  // In a layer's recompute: the tensors the activation store placed partly (core/model/
  // recompute_rows.h); null = a defined tensor is complete.
  const RecomputeRows* recompute_rows = nullptr;
  int layer = -1;  // the decoder layer running (set by the decoder per block), for the profile
  // The micro-batch and virtual pipeline stage running (set by the pipeline executor), for traces.
  int micro_batch = -1;
  int stage = 0;
  Stream& s() const { return *stream; }
  const Device& device() const { return stream->device(); }
  // Uninitialised tensors on the compute device: in the activation dtype, and f32 / i32 ones.
  Tensor Act(const Shape& shape) const { return Tensor::Empty(shape, act_dtype, device()); }
  Tensor F32(const Shape& shape) const { return Tensor::Empty(shape, DType::kF32, device()); }
  Tensor I32(const Shape& shape) const { return Tensor::Empty(shape, DType::kI32, device()); }
  // Zeros of `dtype` on the compute device, zeroed on the stream (no wait).
  Tensor Zeros(const Shape& shape, DType dtype) const;
  // A host tensor's copy on the compute device (itself on the CPU), enqueued on the stream.
  Tensor Upload(const Tensor& host) const { return host.To(device(), s()); }
  // device_sums zeroed (a new tensor), and the one-element view of one of them.
  void ResetDeviceSums() { device_sums = Zeros({kNumDeviceSums}, DType::kF32); }
  Tensor DeviceSumSlot(DeviceSum which) const;
  // Times the enclosing block as `family` of the current layer when profiling (a no-op otherwise);
  // keep the result alive: `auto timed = ctx.Profile(OpFamily::kGemm);`.
  [[nodiscard]] ProfileScope Profile(OpFamily family) const {
    return ProfileScope(profiler, family, s(), layer);
  }
};

// Values the forward pass measured on the host; sums, so the caller normalises over the whole
// global batch. The loss sums are in StepContext::device_sums.
struct ForwardStats {
  // (B) mean token cross entropy of each sequence (detached), when sample_losses_on_host.
  std::vector<float> sample_losses;
  std::vector<int64_t> sample_tokens;  // (B) tokens with a target in each sequence
  int64_t aux_units = 0;     // 1 per micro-batch (batch-level) or B (sequence-level); 0 when off
  int64_t tokens = 0;        // B·S
};

// How backward is seeded. The LM loss gradient of sequence b is d_sample_loss[b] · ∂ℓ_b; the aux and
// z losses add aux_grad_scale · ∂(aux of each unit) and z_grad_scale · ∂(z of each token).
struct BackwardSeeds {
  std::vector<float> d_sample_loss;  // (B)
  float aux_grad_scale = 0.0f;
  float z_grad_scale = 0.0f;
};

}  // namespace moefold::model
