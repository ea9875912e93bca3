// A trainable parameter and the metadata parallelism needs: its Hugging Face-style name, how it is
// sharded, and over which group its gradient is reduced. This table is what makes MoE folding work
// (docs/ARCHITECTURE.md §4): dense weights reduce over DP×CP, expert weights over EDP, and weights
// replicated across TP whose TP ranks saw different tokens (norms under sequence parallelism, the
// router) also sum over TP. A sharded parameter holds only its slice; its values equal that slice
// of the unsharded initialisation, so every layout starts from the same model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace moefold {

// One flat gradient buffer per value, in this order (see ParameterSet::Flatten).
enum class GradReduction {
  kDenseDataCp,       // dense weights, TP-sharded or TP = 1: sum over DP×CP
  kReplicatedDataCp,  // replicated across TP, the same gradient on every TP rank (norms without
                      // sequence parallelism): sum over DP×CP
  kDenseDataCpTp,     // replicated across TP, each TP rank saw other tokens (norms under SP, the
                      // router): sum over TP×DP×CP
  kExpertData,        // expert weights: sum over EDP
  kTiedCopy,          // the last pipeline stage's copy of a tied embedding: like kDenseDataCp,
                      // but left out of the global norm (the first stage's copy counts)
};
inline constexpr GradReduction kAllGradReductions[] = {
    GradReduction::kDenseDataCp, GradReduction::kReplicatedDataCp, GradReduction::kDenseDataCpTp,
    GradReduction::kExpertData, GradReduction::kTiedCopy};
absl::string_view GradReductionName(GradReduction reduction);

// How a tensor is cut over tensor parallelism: dimension `dim` of the global shape is split into
// `size` contiguous ranges of ceil(n / size) (the last ones shorter when n does not divide, as a
// vocabulary of 257 over TP 2), and this rank holds range `rank`.
struct TpSplit {
  int dim = -1;  // -1 = not split
  int rank = 0;
  int size = 1;
};
// Which experts of a stacked expert tensor (dimension 0 = expert) this rank holds: [first, first +
// count); count -1 = all of them (no expert parallelism).
struct ExpertSplit {
  int64_t first = 0;
  int64_t count = -1;
};
// [begin, end) of range `rank` when n elements are split over `size` ranks as above.
std::pair<int64_t, int64_t> ShardRange(int64_t n, int rank, int size);

struct Sharding {
  int tp_dim = -1;          // dimension split over TP (or ETP for experts); -1 = replicated
  int tp_rank = 0;          // which range of tp_dim this rank holds (of tp_size)
  int tp_size = 1;
  int64_t tp_begin = 0;     // global index along tp_dim of the first row held here
  Shape global_shape;       // the unsharded tensor's shape
  int expert_dim = -1;      // dimension that indexes experts in a stacked expert tensor; -1 = none
  int64_t expert_offset = 0;  // global index of the first expert held here
};

struct Parameter {
  std::string name;  // e.g. "model.layers.3.mlp.experts.gate_proj.weight" (stacked experts, see below)
  Tensor value;      // f32 master copy
  Tensor grad;       // f32, same shape; backward accumulates (+=), ZeroGrads() clears
  // The weight the forward and backward passes read: `value` itself, or under bf16 compute its
  // bf16 copy, refreshed from value by ParameterSet::RefreshCompute() after each update.
  Tensor compute;
  Sharding sharding;
  GradReduction reduction = GradReduction::kDenseDataCp;
  bool weight_decay = true;  // false for norms
  float init_std = 0.0f;     // N(0, init_std²); 0 = constant init_value
  float init_value = 0.0f;

  // Hugging Face name of one expert's slice of a stacked expert tensor:
  // "model.layers.3.mlp.experts.gate_proj.weight", e=5 -> "model.layers.3.mlp.experts.5.gate_proj.weight".
  std::string ExpertName(int64_t expert) const;
};

// A run of one parameter inside a flat buffer.
struct FlatSegment {
  Parameter* param;
  int64_t offset;  // elements from the buffer start
  int64_t numel;
};

// Contiguous f32 storage for the values and gradients of every parameter of one GradReduction, in
// creation order, padded with zeros to a multiple of `align` elements (so it splits evenly into
// ZeRO-1 shards). Parameters' value/grad tensors become views into these buffers.
struct FlatBuffer {
  GradReduction reduction;
  Tensor values;   // (padded) f32
  Tensor grads;    // (padded) f32
  Tensor compute;  // (padded) the compute dtype: `values` itself in f32, else its rounded copy
  std::vector<FlatSegment> segments;
  int64_t used = 0;  // end of the last segment (the rest, and any gaps, are zero padding)
};

// Owns every parameter of a model in creation order (the order defines the RNG subsequence of each
// parameter's initialisation, so initial weights do not depend on the layout).
class ParameterSet {
 public:
  // `shape` is the global shape; with a TpSplit the parameter holds its range of split.dim, with an
  // ExpertSplit (a stacked expert tensor, expert_dim 0) its range of experts.
  Parameter* Add(std::string name, const Shape& shape, GradReduction reduction, float init_std,
                 bool weight_decay = true, float init_value = 0.0f, const TpSplit& split = {},
                 const ExpertSplit& experts = {});
  // Draws element i (row-major global index) of every parameter from Philox(seed, subsequence =
  // FNV-1a hash of its name, offset 2i); stacked expert tensors draw each expert from its own name.
  // A shard therefore holds exactly its slice of the unsharded draw.
  void Initialize(uint64_t seed);
  int64_t NumElements() const;
  const std::vector<std::unique_ptr<Parameter>>& params() const { return params_; }
  Parameter* Find(absl::string_view name) const;  // nullptr if absent
  // Moves every parameter's value and grad into flat buffers (one per GradReduction that has
  // parameters, in kAllGradReductions order), keeping their contents. Call once, after
  // construction; views stay valid for the set's lifetime. align >= 1. Each parameter's segment
  // starts at a multiple of segment_align (zero padding between), so blocks of that size never span
  // two parameters: error-feedback compression then sees the same blocks whatever else shares the
  // buffer (pipeline stages). The buffers live on `device` (values copied there); with a compute
  // dtype other than f32 each gets a copy in that dtype (bf16: master weights in f32 and
  // compute in bf16) that parameters' `compute` views.
  std::vector<FlatBuffer>& Flatten(int64_t align, int64_t segment_align = 1,
                                   const Device& device = Device::Cpu(),
                                   DType compute_dtype = DType::kF32);
  // compute = value rounded to the compute dtype, on `stream` (no-op in f32, where they are the
  // same memory). Call after every change of the values (optimizer step, load).
  void RefreshCompute(const Stream& stream);
  // Zeroes every gradient, enqueued on `stream` (a stream of the gradients' device; CPU: at once).
  void ZeroGrads(const Stream& stream);
  std::vector<FlatBuffer>& flat_buffers() { return flat_; }

 private:
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<FlatBuffer> flat_;
};

uint64_t HashName(absl::string_view name);  // FNV-1a 64

// The name of expert `expert`'s slice of the stacked expert tensor `stacked`:
// ("model.layers.3.mlp.experts.gate_proj.weight", 5) -> "model.layers.3.mlp.experts.5.gate_proj.weight".
std::string ExpertTensorName(absl::string_view stacked, int64_t expert);

}  // namespace moefold
