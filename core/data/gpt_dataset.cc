// GptDataset: Megatron's document / sample / shuffle indices and sample assembly, restated in C++.
#include "core/data/gpt_dataset.h"

#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "core/data/numpy_random.h"
#include "core/status.h"

namespace moefold::data {
namespace {

// gpt_dataset._build_document_index without separation: the split's sequence ids per epoch,
// epoch-major, shuffled.
void AppendShuffledEpochs(DocumentRange documents, int num_epochs, NumpyRandomState* rng,
                          std::vector<int32_t>* out) {
  const size_t begin = out->size();
  for (int e = 0; e < num_epochs; ++e) {
    for (int64_t s = documents.begin; s < documents.end; ++s) {
      out->push_back(static_cast<int32_t>(s));
    }
  }
  rng->Shuffle(absl::MakeSpan(out->data() + begin, out->size() - begin));
}

// gpt_dataset._build_shuffle_index: arange over [begin, end) shuffled, appended.
void AppendShuffledRange(int64_t begin, int64_t end, NumpyRandomState* rng,
                         std::vector<int64_t>* out) {
  const size_t at = out->size();
  for (int64_t k = begin; k < end; ++k) out->push_back(k);
  rng->Shuffle(absl::MakeSpan(out->data() + at, out->size() - at));
}

}  // namespace

std::vector<int64_t> BuildSampleIndex(absl::Span<const int32_t> sizes,
                                      absl::Span<const int32_t> document_index, int seq_len,
                                      int num_epochs, int64_t tokens_per_epoch) {
  MF_CHECK_GE(seq_len, 2);
  MF_CHECK_GE(num_epochs, 1);
  const int64_t num_samples = (num_epochs * tokens_per_epoch - 1) / seq_len;
  std::vector<int64_t> index;
  index.reserve(2 * (num_samples + 1));
  int64_t doc = 0;     // position in document_index
  int64_t offset = 0;  // token offset in that sequence where the next sample starts
  index.push_back(doc);
  index.push_back(offset);
  for (int64_t k = 1; k <= num_samples; ++k) {
    int64_t remaining = seq_len + 1;
    while (remaining != 0) {
      const int64_t doc_length = sizes[document_index[doc]] - offset;
      remaining -= doc_length;
      if (remaining <= 0) {
        // The sample ends inside this sequence; the next one starts on its last token (the shared
        // token), hence the −1.
        offset += remaining + doc_length - 1;
        remaining = 0;
      } else {
        MF_CHECK_LT(doc + 1, static_cast<int64_t>(document_index.size()))
            << "documents hold fewer tokens than " << num_samples << " samples need";
        ++doc;
        offset = 0;
      }
    }
    index.push_back(doc);
    index.push_back(offset);
  }
  return index;
}

absl::StatusOr<GptDataset> GptDataset::Build(const IndexedDataset* dataset, int seq_len,
                                             int64_t num_samples_needed, uint64_t seed) {
  MF_CHECK(dataset != nullptr) << "GptDataset::Build needs a dataset";
  return Build(dataset, DocumentRange{0, dataset->num_sequences()}, seq_len, num_samples_needed,
               seed);
}

absl::StatusOr<GptDataset> GptDataset::Build(const IndexedDataset* dataset,
                                             DocumentRange documents, int seq_len,
                                             int64_t num_samples_needed, uint64_t seed) {
  MF_CHECK(dataset != nullptr) << "GptDataset::Build needs a dataset";
  const std::string& name = dataset->prefix();
  if (seq_len < 2) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": seq_len must be ≥ 2, got ", seq_len));
  }
  if (num_samples_needed < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": num_samples must be ≥ 0, got ", num_samples_needed));
  }
  if (seed > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": seed ", seed, " out of NumPy's range [0, 2^32)"));
  }
  const int64_t num_sequences = dataset->num_sequences();
  if (num_sequences > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": ", num_sequences, " sequences exceed Megatron's int32 document index"));
  }
  std::vector<int32_t> sizes(num_sequences);
  if (documents.begin < 0 || documents.end > num_sequences || documents.begin > documents.end) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": sequences [", documents.begin, ", ",
                                                   documents.end, ") outside [0, ",
                                                   num_sequences, ")"));
  }
  int64_t tokens_per_epoch = 0;
  for (int64_t s = 0; s < num_sequences; ++s) {
    sizes[s] = static_cast<int32_t>(dataset->sequence_length(s));
    if (s >= documents.begin && s < documents.end) tokens_per_epoch += sizes[s];
  }
  if (tokens_per_epoch < seq_len + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": sequences [", documents.begin, ", ", documents.end, "): ", tokens_per_epoch,
        " tokens cannot fill one sample of ", seq_len + 1, " tokens"));
  }

  GptDataset gpt;
  gpt.dataset_ = dataset;
  gpt.seq_len_ = seq_len;
  // Megatron's _get_num_epochs: the smallest E ≥ 1 with E·T ≥ num_samples·seq_len + 1.
  const int64_t tokens_requested = num_samples_needed * seq_len + 1;
  const int64_t epochs =
      num_samples_needed == 0
          ? 1
          : std::max<int64_t>(1, (tokens_requested + tokens_per_epoch - 1) / tokens_per_epoch);
  if (epochs > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", epochs, " epochs are too many"));
  }
  gpt.num_epochs_ = static_cast<int>(epochs);

  int64_t samples_sans_final_epoch = 0;
  if (gpt.num_epochs_ > 1) {
    samples_sans_final_epoch = ((epochs - 1) * tokens_per_epoch - 1) / seq_len;
    const int64_t samples_from_final_epoch = num_samples_needed - samples_sans_final_epoch;
    const int64_t samples_per_epoch = (tokens_per_epoch - 1) / seq_len;
    MF_CHECK_GE(samples_from_final_epoch, 0);
    MF_CHECK_LE(samples_from_final_epoch, samples_per_epoch + 1);
    // Same double product and truncation as Python's int(0.80 * n).
    gpt.separate_final_epoch_ = samples_from_final_epoch <
                                static_cast<int64_t>(0.80 * static_cast<double>(samples_per_epoch));
  }

  NumpyRandomState rng(static_cast<uint32_t>(seed));
  gpt.document_index_.reserve(static_cast<size_t>(epochs * documents.size()));
  if (gpt.separate_final_epoch_) {
    AppendShuffledEpochs(documents, gpt.num_epochs_ - 1, &rng, &gpt.document_index_);
    AppendShuffledEpochs(documents, 1, &rng, &gpt.document_index_);
  } else {
    AppendShuffledEpochs(documents, gpt.num_epochs_, &rng, &gpt.document_index_);
  }

  gpt.sample_index_ =
      BuildSampleIndex(sizes, gpt.document_index_, seq_len, gpt.num_epochs_, tokens_per_epoch);
  const int64_t total = static_cast<int64_t>(gpt.sample_index_.size()) / 2 - 1;
  gpt.shuffle_index_.reserve(total);
  if (gpt.separate_final_epoch_) {
    AppendShuffledRange(0, samples_sans_final_epoch, &rng, &gpt.shuffle_index_);
    AppendShuffledRange(samples_sans_final_epoch, total, &rng, &gpt.shuffle_index_);
  } else {
    AppendShuffledRange(0, total, &rng, &gpt.shuffle_index_);
  }
  return gpt;
}

absl::StatusOr<GptDataset> GptDataset::FromIndices(const IndexedDataset* dataset, int seq_len,
                                                   int num_epochs, bool separate_final_epoch,
                                                   std::vector<int32_t> document_index,
                                                   std::vector<int64_t> sample_index,
                                                   std::vector<int64_t> shuffle_index) {
  MF_CHECK(dataset != nullptr);
  const int64_t samples = static_cast<int64_t>(shuffle_index.size());
  bool ok = seq_len >= 2 && num_epochs >= 1 &&
            static_cast<int64_t>(sample_index.size()) == 2 * (samples + 1);
  for (int32_t d : document_index) ok = ok && d >= 0 && d < dataset->num_sequences();
  for (size_t k = 0; ok && k < sample_index.size(); k += 2) {
    ok = sample_index[k] >= 0 && sample_index[k] < static_cast<int64_t>(document_index.size()) &&
         sample_index[k + 1] >= 0 &&
         sample_index[k + 1] < dataset->sequence_length(document_index[sample_index[k]]) + 1;
  }
  for (int64_t k : shuffle_index) ok = ok && k >= 0 && k < samples;
  if (!ok) {
    return absl::DataLossError(
        absl::StrCat(dataset->prefix(), ": cached GPT indices are inconsistent"));
  }
  GptDataset gpt;
  gpt.dataset_ = dataset;
  gpt.seq_len_ = seq_len;
  gpt.num_epochs_ = num_epochs;
  gpt.separate_final_epoch_ = separate_final_epoch;
  gpt.document_index_ = std::move(document_index);
  gpt.sample_index_ = std::move(sample_index);
  gpt.shuffle_index_ = std::move(shuffle_index);
  return gpt;
}

void GptDataset::GetSample(int64_t i, int32_t* tokens) const {
  MF_CHECK(i >= 0 && i < size()) << "sample " << i << " of " << size();
  const int64_t k = shuffle_index_[i];
  const int64_t first = sample_index_[2 * k];
  const int64_t first_offset = sample_index_[2 * k + 1];
  const int64_t last = sample_index_[2 * k + 2];
  const int64_t last_offset = sample_index_[2 * k + 3];
  int64_t written = 0;
  for (int64_t d = first; d <= last; ++d) {
    const int64_t seq = document_index_[d];
    const int64_t begin = d == first ? first_offset : 0;
    // The sample's last token is at last_offset in the last sequence (the shared token).
    const int64_t end = d == last ? last_offset + 1 : dataset_->sequence_length(seq);
    MF_CHECK_LE(written + (end - begin), seq_len_ + 1);
    dataset_->GetTokens(seq, begin, end - begin, tokens + written);
    written += end - begin;
  }
  MF_CHECK_EQ(written, seq_len_ + 1) << "sample " << i;
}

std::vector<int64_t> GlobalBatchSampleIds(int64_t step, int64_t global_batch_size,
                                          int64_t dataset_size) {
  MF_CHECK_GE(step, 0);
  MF_CHECK_GE(global_batch_size, 1);
  MF_CHECK_GE(dataset_size, 1);
  std::vector<int64_t> ids(global_batch_size);
  // (step·G) mod size first, so step·G itself cannot overflow for long runs.
  const int64_t start =
      static_cast<int64_t>((static_cast<__int128>(step) * global_batch_size) % dataset_size);
  for (int64_t k = 0; k < global_batch_size; ++k) ids[k] = (start + k) % dataset_size;
  return ids;
}

}  // namespace moefold::data
