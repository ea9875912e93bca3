// The one owner of saved activations (docs/ARCHITECTURE.md §13): after a layer's forward every tensor
// of its tape (the layers' `Saved` structs) passes through the store, which applies its kind's
// policy — keep it, release it for recomputation, or swap the first α of its token rows to host
// memory (the rest is recomputed). Before the layer's backward the store brings swapped rows back
// and the layer recomputes what is missing with the same kernels, so every policy trains
// bit-identically to keep.
//
//   ActivationStore store(ActivationPolicy::Selective());
//   store.Release(ctx, layer, resident, refs, &stash);  // after the forward; refs name the tape
//   FetchedRows rows = *store.Prefetch(ctx, stash);     // one layer ahead of the backward
//   RecomputeRows partial;
//   store.Place(ctx, refs, rows, stash, &partial);      // the compute stream waits for the copy
//   ... the layer recomputes the undefined tensors and the missing rows of the partial ones ...
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/allocator.h"
#include "core/model/recompute_rows.h"
#include "core/model/step_context.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::model {

// What a saved tensor is; a policy is chosen per kind. Names (SavedKindName) are the config's.
enum class SavedKind : int {
  kLayerInput = 0,   // "layer_input": a block's input x (the checkpoint; always kept)
  kNormOutput,       // "norm_output": RMSNorm outputs and their TP-gathered / routed views
  kNormStats,        // "norm_stats": the norms' rstd (T) f32
  kAttentionQkv,     // "attention_qkv": q, k, v after RoPE
  kAttentionOutput,  // "attention_output": the attention core's output before W_o
  kAttentionLse,     // "attention_lse": the attention core's log-sum-exp (f32)
  kResidual,         // "residual": h = x + attention, the FFN's residual input
  kSwiGluInput,      // "swiglu_input": [gate | up] of the MLP, shared and routed experts
  kSwiGluOutput,     // "swiglu_output": silu(gate) ⊙ up
  kRouter,           // "router": router logits and probabilities (f32)
  kMoeDispatched,    // "moe_dispatched": the local experts' rows (the permuted, received tokens)
  kMoeCombined,      // "moe_combined": the experts' outputs back home, before weighting
  kNumKinds,
};
inline constexpr int kNumSavedKinds = static_cast<int>(SavedKind::kNumKinds);
const char* SavedKindName(SavedKind kind);
// InvalidArgument naming the known kinds.
absl::StatusOr<SavedKind> ParseSavedKind(absl::string_view name);

enum class SavePolicy { kKeep, kRecompute, kSwap };
const char* SavePolicyName(SavePolicy policy);                       // "keep" | "recompute" | "swap"
absl::StatusOr<SavePolicy> ParseSavePolicy(absl::string_view name);  // InvalidArgument

// One tensor of a layer's tape. `recomputable` is false where recomputing it would repeat the
// token dispatcher's exchange (the MoE rows under EP/ETP): a recompute policy then keeps it, and a
// swap moves all of its rows. A tensor whose memory lies inside an earlier ref's (a view such as
// the MoE layer's routed rows of the FFN input) follows that ref: it is never copied on its own,
// and when released the layer derives it again from its base. `row_split` is false where the
// layer's recompute cannot produce a range of token rows (the attention core: a query row reads
// every earlier key; the router; rows in expert order): a swap then moves all of its rows, so its
// backward fetches it whole and never reruns the op for it, instead of fetching α of the rows and
// recomputing every row anyway.
struct SavedRef {
  SavedKind kind;
  Tensor* tensor;
  bool recomputable = true;
  bool row_split = true;
};

struct ActivationPolicy {
  std::array<SavePolicy, kNumSavedKinds> kinds{};  // all kKeep
  float swap_fraction = 1.0f;  // α: the share of each swapped tensor's token rows sent to the host
  // Under swapping, a stage's last layers (whose backward runs first) stay resident.
  int resident_layers = 1;
  // Global layer indices the policy applies to; empty = every layer. Other layers keep.
  std::vector<int> layers;

  // keep: everything. selective: recompute the cheap large tensors (norm outputs, q/k/v, SwiGLU's
  // input and output, the MoE dispatched rows where that needs no exchange). full: keep only each
  // layer's input (and the rows the dispatcher exchanged) and rerun the layer's forward in its
  // backward. swap α: every kind but the layer input and the norms' rstd is swapped (α of its
  // rows to the host, the rest recomputed).
  static ActivationPolicy Keep();
  static ActivationPolicy Selective();
  static ActivationPolicy Full();
  static ActivationPolicy Swap(float alpha);
  bool AppliesTo(int layer) const;
  // kKeep for layers outside `layers`.
  SavePolicy For(int layer, SavedKind kind) const;
  bool IsKeep() const;
  bool AnySwap() const;
};

// Host memory from an allocator (the pinned pool on a GPU, the CPU host arena), returned to it
// after the work of every stream recorded with RecordStream.
class HostBuffer {
 public:
  HostBuffer(size_t bytes, Allocator& allocator);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  void RecordStream(const Stream& stream);

 private:
  Allocator* allocator_;
  void* data_;
  size_t bytes_;
  std::vector<void*> streams_;
};

// `bytes` from src to dst (host, pinned host or device memory), enqueued on `stream` (a CPU stream:
// at once). Status: a CUDA failure.
absl::Status CopyBytes(void* dst, const void* src, size_t bytes, const Stream& stream);

// The host rows of one layer's swapped tensors (kept with the layer's tape until its backward).
struct SwapStash {
  struct Entry {
    int index = 0;       // into the layer's SavedRef list
    std::shared_ptr<HostBuffer> host;  // the first `rows` rows of the tensor, row-major
    int64_t rows = 0;    // swapped rows of `total_rows`
    int64_t total_rows = 0;
    int64_t width = 0;   // elements per row
    Shape shape;         // the device tensor's
    DType dtype = DType::kF32;
  };
  std::vector<Entry> entries;
  std::shared_ptr<Event> copied;  // CUDA: the device-to-host copies are done
};

// The device tensors a prefetch brought back, with the event their copy records.
struct FetchedRows {
  std::vector<std::pair<int, Tensor>> tensors;  // (ref index, full-shape device tensor)
  std::shared_ptr<Event> arrived;
};

class ActivationStore {
 public:
  explicit ActivationStore(ActivationPolicy policy);
  const ActivationPolicy& policy() const { return policy_; }

  // After layer `layer`'s forward (`last_resident`: it is among the stage's resident last layers):
  // keep, release (undefined) or swap each ref's tensor. Swapped rows go to host memory on the copy
  // stream (CUDA) after the compute stream's work so far. Status: a CUDA failure.
  absl::Status Release(const StepContext& ctx, int layer, bool last_resident,
                       std::span<const SavedRef> refs, SwapStash* stash);
  // Starts bringing a layer's swapped rows back into new device tensors (the caching allocator's),
  // on the copy stream: called one layer ahead in backward so the copy hides under compute.
  absl::StatusOr<FetchedRows> Prefetch(const StepContext& ctx, const SwapStash& stash);
  // Before the layer's backward: the compute stream waits for `fetched`; tensors whose every row
  // was swapped are placed in the refs; a partly swapped one is placed as a new full-shape tensor
  // whose first rows are the fetched ones, marked in *partial so the layer's recompute produces
  // only the rest (MEMO's token-wise split; core/model/recompute_rows.h).
  absl::Status Place(const StepContext& ctx, std::span<const SavedRef> refs,
                     const FetchedRows& fetched, const SwapStash& stash, RecomputeRows* partial);

  // The host memory swapped tensors occupy: on the CPU a separate arena that stands in for pinned
  // memory (so its bytes are counted apart from the "device"); on a GPU the pinned pool.
  static Allocator& HostArena(const Device& device);
  static CpuAllocator& CpuHostArena();

 private:
  absl::Status EnsureCopyStream(const Device& device);
  ActivationPolicy policy_;
  std::optional<Stream> copy_stream_;  // CUDA: device-to-host and host-to-device copies
};

// A tensor viewed as rows of tokens: (B, S, ...) 4-D tensors by B·S, others by their first dim.
int64_t TokenRows(const Tensor& t);

}  // namespace moefold::model
