// Megatron's builder flow (one dataset, or a weighted / size-weighted blend), restated.
#include "core/data/training_data.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/index_cache.h"
#include "core/status.h"

namespace moefold::data {
namespace {

// What determines a dataset's sequences: its size and a fingerprint of its sequence lengths.
std::string DatasetFingerprint(const IndexedDataset& ds) {
  uint64_t hash = Fnv1a64(nullptr, 0);
  for (int64_t s = 0; s < ds.num_sequences(); ++s) {
    const int64_t length = ds.sequence_length(s);
    hash = Fnv1a64(&length, sizeof(length), hash);
  }
  return absl::StrFormat("%s: %d sequences, %d tokens, lengths fnv %016x", ds.prefix(),
                         ds.num_sequences(), ds.num_tokens(), hash);
}

}  // namespace

int64_t SampleSource::size() const {
  return blended_ ? static_cast<int64_t>(blend_.dataset_index.size()) : parts_.front()->size();
}

void SampleSource::GetSample(int64_t i, int32_t* tokens) const {
  if (!blended_) return parts_.front()->GetSample(i, tokens);
  MF_CHECK(i >= 0 && i < size()) << "blend sample " << i << " of " << size();
  parts_[blend_.dataset_index[i]]->GetSample(blend_.dataset_sample_index[i], tokens);
}

absl::StatusOr<std::unique_ptr<TrainingData>> TrainingData::Open(
    const TrainingDataOptions& options) {
  auto data = std::make_unique<TrainingData>();
  MF_ASSIGN_OR_RETURN(data->spec_, ParseBlend(options.paths));
  MF_ASSIGN_OR_RETURN(const SplitShares shares, ParseSplit(options.split));
  for (int k = 0; k < 3; ++k) {
    if (options.num_samples[k] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(SplitName(static_cast<SplitKind>(k)),
                                                     " samples must be ≥ 0, got ",
                                                     options.num_samples[k]));
    }
  }
  const BlendSpec& spec = data->spec_;
  const size_t n = spec.prefixes.size();
  if (n >= 32767) {
    return absl::InvalidArgumentError(absl::StrCat("data.paths: ", n, " datasets (at most 32766)"));
  }
  for (const std::string& prefix : spec.prefixes) {
    MF_ASSIGN_OR_RETURN(IndexedDataset ds, IndexedDataset::Open(prefix));
    if (options.vocab_size > 0) MF_RETURN_IF_ERROR(ds.ValidateTokens(options.vocab_size));
    data->ranges_.push_back(SplitRanges(shares, ds.num_sequences()));
    data->datasets_.push_back(std::make_unique<IndexedDataset>(std::move(ds)));
  }
  // Megatron: a single prefix without a weight is used as is; anything else is blended. The
  // weighted blend normalises the weights twice (the builder, then BlendedDataset).
  const bool plain = n == 1 && spec.weights.empty();
  std::vector<std::string> fingerprints;
  for (const auto& ds : data->datasets_) {
    fingerprints.push_back(options.cache_dir.empty() ? std::string() : DatasetFingerprint(*ds));
  }
  const std::vector<double> weights =
      spec.weights.empty() ? std::vector<double>() : NormalizeWeights(spec.weights);

  for (int k = 0; k < 3; ++k) {
    const auto kind = static_cast<SplitKind>(k);
    const int64_t wanted = options.num_samples[k];
    if (!data->ranges_[0][k].has_value() || (kind != SplitKind::kTrain && wanted == 0)) continue;
    auto source = std::make_unique<SampleSource>();
    // Samples each dataset is built with: the request itself (plain), the weighted share plus
    // Megatron's surplus, or one epoch (num_samples None in Megatron) for a size-weighted blend.
    std::vector<int64_t> build(n, wanted), drawn;
    if (!plain && !weights.empty()) {
      build = SamplesPerDataset(weights, wanted, kMidLevelSurplus);
      drawn = SamplesPerDataset(weights, wanted, 0.0);
    } else if (!plain) {
      build.assign(n, 0);
    }
    for (size_t d = 0; d < n; ++d) {
      const DocumentRange range = *data->ranges_[d][k];
      auto gpt = data->BuildCached(*data->datasets_[d], fingerprints[d], range, options, build[d]);
      if (!gpt.ok()) {
        return Annotate(gpt.status(), absl::StrCat("the ", SplitName(kind), " split of ",
                                                   spec.prefixes[d], " (data.split \"",
                                                   options.split, "\")"));
      }
      source->parts_.push_back(std::make_unique<GptDataset>(std::move(*gpt)));
    }
    if (!plain) {
      source->blended_ = true;
      std::vector<double> blend_weights;
      int64_t size = 0;
      if (!weights.empty()) {
        blend_weights = NormalizeWeights(weights);
        for (int64_t s : drawn) size += s;
      } else {
        // Weighted by the datasets' sizes; at most what they hold.
        std::vector<double> lengths;
        int64_t total = 0;
        for (const auto& part : source->parts_) {
          lengths.push_back(static_cast<double>(part->size()));
          total += part->size();
        }
        blend_weights = NormalizeWeights(lengths);
        size = std::min(wanted, total);
      }
      MF_ASSIGN_OR_RETURN(source->blend_, data->BlendCached(blend_weights, size, options));
      std::vector<int64_t> counts(n, 0);
      for (int16_t d : source->blend_.dataset_index) ++counts[d];
      for (size_t d = 0; d < n; ++d) {
        if (counts[d] > source->parts_[d]->size()) {
          return absl::OutOfRangeError(absl::StrCat(
              "the ", SplitName(kind), " blend draws ", counts[d], " samples from ",
              spec.prefixes[d], ", which provides ", source->parts_[d]->size()));
        }
      }
    }
    data->splits_[k] = std::move(source);
  }
  return data;
}

absl::StatusOr<GptDataset> TrainingData::BuildCached(const IndexedDataset& ds,
                                                    const std::string& fingerprint,
                                                    DocumentRange range,
                                                    const TrainingDataOptions& options,
                                                    int64_t num_samples) {
  if (options.cache_dir.empty()) {
    return GptDataset::Build(&ds, range, options.seq_len, num_samples, options.seed);
  }
  const std::string description = absl::StrCat(
      "moefold GPT indices v1\n", fingerprint, "\nsequences [", range.begin, ", ", range.end,
      ")\nseq_len ", options.seq_len, "\nsamples ", num_samples, "\nseed ", options.seed, "\n");
  const std::string path = IndexCachePath(options.cache_dir, "gpt", description);
  CachedIndices cached;
  if (ReadIndexCache(path, description, &cached) && cached.scalars.size() == 2) {
    auto gpt = GptDataset::FromIndices(&ds, options.seq_len, static_cast<int>(cached.scalars[0]),
                                       cached.scalars[1] != 0, std::move(cached.i32),
                                       std::move(cached.i64a), std::move(cached.i64b));
    if (gpt.ok()) {
      ++cache_hits_;
      return gpt;
    }
  }
  MF_ASSIGN_OR_RETURN(GptDataset gpt,
                      GptDataset::Build(&ds, range, options.seq_len, num_samples, options.seed));
  cached.scalars = {gpt.num_epochs(), gpt.separate_final_epoch() ? 1 : 0};
  cached.i32 = gpt.document_index();
  cached.i64a = gpt.sample_index();
  cached.i64b = gpt.shuffle_index();
  cached.i16.clear();
  MF_RETURN_IF_ERROR(WriteIndexCache(path, description, cached));
  ++cache_writes_;
  return gpt;
}

absl::StatusOr<BlendIndices> TrainingData::BlendCached(const std::vector<double>& weights,
                                                      int64_t size,
                                                      const TrainingDataOptions& options) {
  if (options.cache_dir.empty()) return BuildBlendingIndices(weights, size);
  std::string description = "moefold blend indices v1\nweights";
  for (double w : weights) absl::StrAppendFormat(&description, " %a", w);
  absl::StrAppend(&description, "\nsize ", size, "\n");
  const std::string path = IndexCachePath(options.cache_dir, "blend", description);
  CachedIndices cached;
  if (ReadIndexCache(path, description, &cached) &&
      static_cast<int64_t>(cached.i16.size()) == size &&
      static_cast<int64_t>(cached.i64a.size()) == size) {
    bool ok = true;
    for (int16_t d : cached.i16) ok = ok && d >= 0 && static_cast<size_t>(d) < weights.size();
    if (ok) {
      ++cache_hits_;
      return BlendIndices{std::move(cached.i16), std::move(cached.i64a)};
    }
  }
  BlendIndices blend = BuildBlendingIndices(weights, size);
  cached = CachedIndices();
  cached.i16 = blend.dataset_index;
  cached.i64a = blend.dataset_sample_index;
  MF_RETURN_IF_ERROR(WriteIndexCache(path, description, cached));
  ++cache_writes_;
  return blend;
}

}  // namespace moefold::data
