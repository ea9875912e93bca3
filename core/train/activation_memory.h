// Activation memory from the config alone (docs/FORMULAS.md §15): the bytes of every saved tensor
// kind of one layer on one rank, read off the layers' `Saved` shapes; what a policy of the
// activation store keeps on the device, sends to the host and recomputes; the peak a stage reaches
// with the pipeline's micro-batches in flight; the swap fraction `auto` picks; and the policy
// `moefold plan --memory-budget` suggests. Also the config → ActivationPolicy conversion.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/model/activation_store.h"
#include "core/model/model_spec.h"

namespace moefold::train {

// The sizes one rank sees (parallel layout) for the activation table.
struct ActivationLayout {
  int64_t tp = 1, cp = 1, ep = 1, etp = 1;
  bool sequence_parallel = false;
  int64_t micro_batch = 1, seq_len = 1;  // seq_len: the whole sequence (divided by cp here)
  int64_t act_bytes = 4;                 // activation element size (f32 4, bf16 2)
  // Element size of the projections' gathered inputs saved under SP (1 where an FP8 gather saves
  // codes, core/model/fp8_gather.h; 0 = act_bytes).
  int64_t gathered_bytes = 0;
  // Bytes a value of the MoE layer's saved dispatched rows where the FP8 dispatch keeps them as
  // codes and scales (1 + the scales' share, core/model/fp8_dispatch.h; 0 = act_bytes).
  double dispatched_bytes = 0;
};

// Bytes of one layer's saved tensors on one rank, by kind, for one micro-batch; `always` holds
// the routing plan and aux counts, which no policy touches. `recomputable[k]` is false where
// recomputing the kind's tensors would repeat the dispatcher's exchange.
struct LayerActivations {
  std::array<int64_t, model::kNumSavedKinds> bytes{};
  std::array<bool, model::kNumSavedKinds> recomputable{};
  // Of bytes[k], what a swap moves whole whatever α (SavedRef::row_split false: the attention
  // core's outputs, the router's tensors, the routed experts' rows).
  std::array<int64_t, model::kNumSavedKinds> whole{};
  int64_t always = 0;
  int64_t total() const;
};
LayerActivations LayerActivationBytes(const model::ModelSpec& spec, const ActivationLayout& layout,
                                      bool moe_layer);
// The head's saved tensors (final norm, its gathered copy, logits, lse) on the last stage.
int64_t HeadActivationBytes(const model::ModelSpec& spec, const ActivationLayout& layout);

// One layer under a policy: what stays on the device between its forward and backward, what is
// on the host, and what its backward brings back (recomputed or fetched) on top of `device`.
struct LayerSplit {
  int64_t device = 0, host = 0, restored = 0;
  int64_t host_whole = 0;  // of `host`, what goes whole at any α > 0 (LayerActivations::whole)
};
LayerSplit SplitLayer(const LayerActivations& a, const model::ActivationPolicy& policy, int layer,
                      bool resident);

// One stage (virtual stage) of layers [first, last) for one micro-batch in flight.
struct StageActivations {
  int64_t device = 0;        // held between forward and backward (+ the head's, on the last stage)
  int64_t host = 0;          // swapped rows on the host
  int64_t host_whole = 0;    // of `host`, the tensors swapped whole at any α > 0
  int64_t working = 0;       // the largest backward working set: a layer's restored tensors plus
                             // the next layer's prefetched rows and the gradient temporaries
  int64_t keep_device = 0;   // `device` under keep, for the reduction factor
};
StageActivations StageActivationBytes(const model::ModelSpec& spec, const ActivationLayout& layout,
                                      const model::ActivationPolicy& policy, int first, int last,
                                      bool head);

// The store's policy from memory.* (swap_auto resolved by the caller through ChooseSwapFraction;
// until then swap_fraction is used). InvalidArgument for an unknown policy or kind.
absl::StatusOr<model::ActivationPolicy> ActivationPolicyFromConfig(
    const config::ExperimentConfig& config);

// Host bytes under swap at α > 0: whole + α · split (docs/FORMULAS.md §15.2).
struct SwapHostBytes {
  int64_t split = 0;  // the token rows split by α
  int64_t whole = 0;  // the tensors swapped whole (and what cannot be recomputed)
};

// `auto`: the largest α in [0, 1] whose host copy of a layer's swapped bytes hides under the
// layer's forward compute ((whole + α · split) / bandwidth ≤ forward seconds) and whose host bytes
// fit the budget (whole + α · split ≤ budget; budget 0 = unbounded). 0 (recompute everything) when
// even the whole part does not. Rounded down to 1/64.
float ChooseSwapFraction(SwapHostBytes per_layer, double layer_forward_s, double host_bytes_per_s,
                         SwapHostBytes per_rank, int64_t host_budget_bytes);

// Host-to-device bandwidth of this process's host link in bytes/s, measured by timing copies of
// `bytes` from the activation store's host memory (a CPU: memory bandwidth of a host copy).
double MeasureHostLinkBandwidth(const Device& device, int64_t bytes = 32 << 20);

// The GEMM throughput this process achieves on `device` in FLOP/s: the best of three timed
// (m, k)·(n, k)ᵀ GEMMs in `dtype` after a warm-up (memory.swap_auto's probe of a layer's compute
// speed: its largest projection's shape). 0 when nothing could be timed.
double MeasureGemmFlops(const Device& device, DType dtype, int64_t m, int64_t k, int64_t n);

}  // namespace moefold::train
