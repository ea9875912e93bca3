// GPT training samples drawn from an IndexedDataset exactly as Megatron-LM's GPTDataset does
// (docs/FORMULAS.md §12), so the same .idx/.bin and seed give the same token order here and in
// Megatron. Invariant: every sample has seq_len + 1 tokens and sample j of the unshuffled order is
// tokens [j·seq_len, j·seq_len + seq_len] of the concatenation of the documents in document_index()
// order.
//
//   MF_ASSIGN_OR_RETURN(GptDataset gpt, GptDataset::Build(&ds, /*seq_len=*/256, steps * G, 1234));
//   std::vector<int32_t> tokens(257);
//   for (int64_t id : GlobalBatchSampleIds(step, G, gpt.size())) gpt.GetSample(id, tokens.data());
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/data/indexed_dataset.h"
#include "core/data/split.h"

namespace moefold::data {

class GptDataset {
 public:
  // Builds the three Megatron indices over all sequences of `dataset` (Megatron's split "100,0,0",
  // training split: add_extra_token_to_sequence = true, drop_last_partial_sequence = true):
  //   T = Σ lengths; epochs E = smallest E ≥ 1 with E·T ≥ num_samples·seq_len + 1 (E = 1 when
  //   num_samples_needed is 0); separate_final_epoch when E > 1 and the last epoch contributes
  //   fewer than int(0.80 · samples_per_epoch) samples; document index = [0..S) repeated E times,
  //   shuffled by RandomState(seed) (the first E − 1 epochs and the last one shuffled separately
  //   when separated); sample index = BuildSampleIndex(...); shuffle index = arange(size())
  //   shuffled by the same RandomState (when separated: [0, samples of the first E − 1 epochs) and
  //   the rest separately).
  // `dataset` must outlive the result. InvalidArgument when seq_len < 2, num_samples_needed < 0,
  // seed ≥ 2^32 (NumPy's limit), or the dataset has fewer than seq_len + 1 tokens.
  static absl::StatusOr<GptDataset> Build(const IndexedDataset* dataset, int seq_len,
                                          int64_t num_samples_needed, uint64_t seed);
  // The same over the sequences `documents` only (one split of Megatron's --split, whose
  // indexed_indices are that range): S and T above count those sequences, the document index
  // holds their ids. InvalidArgument also for a range outside the dataset.
  static absl::StatusOr<GptDataset> Build(const IndexedDataset* dataset, DocumentRange documents,
                                          int seq_len, int64_t num_samples_needed, uint64_t seed);

  // A dataset from indices computed earlier by Build (the index cache, core/data/index_cache.h).
  // DataLoss when they are inconsistent with each other or with `dataset`.
  static absl::StatusOr<GptDataset> FromIndices(const IndexedDataset* dataset, int seq_len,
                                                int num_epochs, bool separate_final_epoch,
                                                std::vector<int32_t> document_index,
                                                std::vector<int64_t> sample_index,
                                                std::vector<int64_t> shuffle_index);

  // Samples available (≥ num_samples_needed): (E·T − 1) / seq_len.
  int64_t size() const { return static_cast<int64_t>(shuffle_index_.size()); }
  int seq_len() const { return seq_len_; }
  int num_epochs() const { return num_epochs_; }
  bool separate_final_epoch() const { return separate_final_epoch_; }

  // Writes the seq_len + 1 tokens of sample i (0 ≤ i < size(), after the shuffle) into tokens[];
  // inputs are tokens[0, seq_len), labels tokens[1, seq_len]. Thread-safe (const, no caching).
  void GetSample(int64_t i, int32_t* tokens) const;

  // The indices, for tests and for comparison with Megatron's cached .npy files.
  const std::vector<int32_t>& document_index() const { return document_index_; }
  // (size() + 1) × 2, row-major: [position in document_index, token offset in that sequence].
  const std::vector<int64_t>& sample_index() const { return sample_index_; }
  const std::vector<int64_t>& shuffle_index() const { return shuffle_index_; }

 private:
  GptDataset() = default;

  const IndexedDataset* dataset_ = nullptr;
  int seq_len_ = 0;
  int num_epochs_ = 0;
  bool separate_final_epoch_ = false;
  std::vector<int32_t> document_index_;
  std::vector<int64_t> sample_index_;
  std::vector<int64_t> shuffle_index_;
};

// Megatron's helpers.build_sample_idx (add_extra_token_to_sequence = 1,
// drop_last_partial_sequence): num_samples = (num_epochs·tokens_per_epoch − 1) / seq_len; returns
// (num_samples + 1) × 2 entries; row 0 is (0, 0) and row k + 1 is where sample k + 1 starts, the
// last token of sample k, since consecutive samples share one token. sizes[s] is the length of
// sequence s; document_index lists sequence ids in reading order. MF_CHECKs seq_len ≥ 2 and that
// the documents hold the tokens.
std::vector<int64_t> BuildSampleIndex(absl::Span<const int32_t> sizes,
                                      absl::Span<const int32_t> document_index, int seq_len,
                                      int num_epochs, int64_t tokens_per_epoch);

// Sample ids of optimizer step `step` for a global batch of G sequences: (step·G + k) mod
// dataset_size for k in [0, G). Every data-parallel layout consumes the same ids per step; a rank
// takes its slice of this list. MF_CHECKs step ≥ 0, G ≥ 1, dataset_size ≥ 1.
std::vector<int64_t> GlobalBatchSampleIds(int64_t step, int64_t global_batch_size,
                                          int64_t dataset_size);

}  // namespace moefold::data
