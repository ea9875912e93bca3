// Weighted blends of datasets as Megatron-LM's --data-path and BlendedDataset (docs/FORMULAS.md
// §16): "[0.3, A, 0.7, B]" names the datasets and their weights; each dataset is asked for
// ceil(ceil(size·w)·(1 + surplus)) samples and the blend interleaves them greedily, each position
// going to the dataset whose realised count lags its share the most. Invariant: for the same
// weights and size, the indices equal Megatron's build_blending_indices bit for bit.
//
//   MF_ASSIGN_OR_RETURN(BlendSpec spec, ParseBlend({"0.3", "data/a", "0.7", "data/b"}));
//   BlendIndices idx = BuildBlendingIndices(NormalizeWeights(spec.weights), 1000);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moefold::data {

struct BlendSpec {
  std::vector<std::string> prefixes;
  std::vector<double> weights;  // as written; empty = no weights (an odd-length list)
};

// Megatron's get_blend_from_list: an even-length list alternates weight, prefix; an odd-length one
// is prefixes only. InvalidArgument naming the entry for an empty list, a weight that is not a
// number, is not finite or is ≤ 0 (Megatron asserts every weight > 0), weights that do not sum to a
// positive number, an empty prefix.
absl::StatusOr<BlendSpec> ParseBlend(absl::Span<const std::string> entries);

// w / Σw in double (NumPy's normalize).
std::vector<double> NormalizeWeights(absl::Span<const double> weights);

// Megatron's _get_size_per_split_per_dataset for one split: ceil(ceil(size·w_d)·(1 + surplus)) per
// dataset d (weights normalised). With surplus 0 these are the samples the blend draws from each
// dataset and their sum is the blend's size; with Megatron's mid-level surplus 0.005 they are the
// samples each dataset is built with.
std::vector<int64_t> SamplesPerDataset(absl::Span<const double> normalized_weights, int64_t size,
                                       double surplus);
inline constexpr double kMidLevelSurplus = 0.005;  // Megatron's mid_level_dataset_surplus default

struct BlendIndices {
  std::vector<int16_t> dataset_index;         // (size) which dataset serves blend sample i
  std::vector<int64_t> dataset_sample_index;  // (size) the sample of that dataset
};

// Megatron's helpers.build_blending_indices: for i in [0, size), with x = max(i, 1) as a double,
// the dataset d maximising w_d·x − taken_d (the first on ties) serves sample i with its sample
// taken_d, then taken_d += 1. MF_CHECKs 1 ≤ datasets < 32767 and size ≥ 0.
BlendIndices BuildBlendingIndices(absl::Span<const double> normalized_weights, int64_t size);

}  // namespace moefold::data
