// The samples of a run's three splits, built as Megatron-LM's BlendedMegatronDatasetBuilder does
// (docs/FORMULAS.md §16): each dataset of data.paths is cut into train/valid/test sequence ranges
// by data.split, each range becomes a GptDataset (same seed for all), and several datasets are
// interleaved by the greedy blending indices. Invariant: split k's sample i is the sample Megatron
// returns at index i of its split k for the same files, seed, sequence length and sizes.
//
//   MF_ASSIGN_OR_RETURN(auto data, TrainingData::Open({.paths = {"0.3", "a", "0.7", "b"},
//       .split = "98,2,0", .seq_len = 256, .seed = 1234, .num_samples = {n_train, n_valid, 0}}));
//   data->split(SplitKind::kTrain)->GetSample(i, tokens);
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/data/blend.h"
#include "core/data/gpt_dataset.h"
#include "core/data/indexed_dataset.h"
#include "core/data/split.h"

namespace moefold::data {

// One split's samples: one GptDataset, or a blend of one per dataset.
class SampleSource {
 public:
  int64_t size() const;
  // The seq_len + 1 tokens of sample i (0 ≤ i < size()); thread-safe.
  void GetSample(int64_t i, int32_t* tokens) const;
  // The datasets' GptDatasets (one without a blend) and the blend's indices (empty without).
  const std::vector<std::unique_ptr<GptDataset>>& parts() const { return parts_; }
  const BlendIndices& blend() const { return blend_; }
  bool blended() const { return blended_; }

 private:
  friend class TrainingData;
  std::vector<std::unique_ptr<GptDataset>> parts_;
  bool blended_ = false;
  BlendIndices blend_;
};

struct TrainingDataOptions {
  // Megatron's --data-path list: prefixes, or weight, prefix pairs (ParseBlend).
  std::vector<std::string> paths;
  std::string split;  // Megatron's --split ("" = all train)
  int seq_len = 0;
  uint64_t seed = 0;
  // Samples each split must provide (Megatron's train_valid_test_num_samples). A split with 0
  // requested is not built (none is read), except train.
  std::array<int64_t, 3> num_samples = {0, 0, 0};
  // Every dataset's tokens are checked to lie in [0, vocab_size) (0 = unchecked).
  int64_t vocab_size = 0;
  // Where the GPT and blend indices are cached (core/data/index_cache.h); "" = not cached.
  std::string cache_dir;
};

class TrainingData {
 public:
  // Opens the datasets and builds the splits. InvalidArgument (naming the setting) for a bad
  // split or blend, a split range too small for one sample; the errors of IndexedDataset::Open and
  // ValidateTokens; OutOfRange when a blend would draw more samples from a dataset than it built
  // (Megatron's mid-level surplus too small).
  static absl::StatusOr<std::unique_ptr<TrainingData>> Open(const TrainingDataOptions& options);

  // The split's samples; nullptr when the split has no share or was not requested.
  const SampleSource* split(SplitKind kind) const { return splits_[static_cast<int>(kind)].get(); }
  const std::vector<std::unique_ptr<IndexedDataset>>& datasets() const { return datasets_; }
  // The blend as parsed, and each dataset's sequence range per split (nullopt: no share).
  const BlendSpec& blend_spec() const { return spec_; }
  // Index files this Open read from / wrote to the cache.
  int cache_hits() const { return cache_hits_; }
  int cache_writes() const { return cache_writes_; }
  const std::array<std::optional<DocumentRange>, 3>& ranges(size_t dataset) const {
    return ranges_[dataset];
  }

 private:
  // GptDataset::Build / BuildBlendingIndices through the index cache (when options.cache_dir).
  absl::StatusOr<GptDataset> BuildCached(const IndexedDataset& ds, const std::string& fingerprint,
                                         DocumentRange range, const TrainingDataOptions& options,
                                         int64_t num_samples);
  absl::StatusOr<BlendIndices> BlendCached(const std::vector<double>& weights, int64_t size,
                                           const TrainingDataOptions& options);

  BlendSpec spec_;
  std::vector<std::unique_ptr<IndexedDataset>> datasets_;
  std::vector<std::array<std::optional<DocumentRange>, 3>> ranges_;
  std::array<std::unique_ptr<SampleSource>, 3> splits_;
  int cache_hits_ = 0, cache_writes_ = 0;
};

}  // namespace moefold::data
