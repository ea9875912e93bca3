// Megatron's blend parsing, per-dataset sample counts and greedy blending indices, restated.
#include "core/data/blend.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace moefold::data {

absl::StatusOr<BlendSpec> ParseBlend(absl::Span<const std::string> entries) {
  if (entries.empty()) return absl::InvalidArgumentError("data.paths is empty");
  BlendSpec spec;
  // An even-length list whose even entries are all numbers alternates weight, prefix; otherwise
  // every entry is a prefix (Megatron: [A, B] blends A and B by their sizes).
  bool weighted = entries.size() % 2 == 0;
  if (weighted) {
    int numbers = 0;
    for (size_t i = 0; i < entries.size(); i += 2) {
      double w;
      numbers += absl::SimpleAtod(entries[i], &w);
    }
    weighted = numbers > 0;
  }
  if (!weighted) {
    spec.prefixes.assign(entries.begin(), entries.end());
  } else {
    double sum = 0;
    for (size_t i = 0; i < entries.size(); i += 2) {
      double w = 0;
      if (!absl::SimpleAtod(entries[i], &w)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "data.paths[", i, "] = \"", entries[i],
            "\" is not a weight (an even-length list alternates weight, prefix)"));
      }
      if (!std::isfinite(w)) {
        return absl::InvalidArgumentError(
            absl::StrCat("data.paths[", i, "]: weight ", entries[i], " is not finite"));
      }
      sum += w;
      spec.weights.push_back(w);
      spec.prefixes.push_back(entries[i + 1]);
    }
    if (!(sum > 0) || !std::isfinite(sum)) {
      return absl::InvalidArgumentError(
          absl::StrCat("data.paths: the weights sum to ", sum, ", not a positive number"));
    }
    for (size_t d = 0; d < spec.weights.size(); ++d) {
      if (spec.weights[d] <= 0) {  // Megatron's BlendedDataset asserts every weight > 0
        return absl::InvalidArgumentError(absl::StrCat("data.paths[", 2 * d, "]: weight ",
                                                       spec.weights[d], " of ", spec.prefixes[d],
                                                       " must be positive"));
      }
    }
  }
  for (size_t i = 0; i < spec.prefixes.size(); ++i) {
    if (spec.prefixes[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("data.paths: dataset ", i, " has an empty prefix"));
    }
  }
  return spec;
}

namespace {

// numpy.sum of a float64 array (pairwise_sum_DOUBLE): a plain loop below 8 values, 8 running sums
// up to 128, halves (cut at a multiple of 8) beyond; the normalised weights match to the bit.
double NumpySum(const double* a, size_t n) {
  if (n < 8) {
    double res = 0;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t half = n / 2;
  half -= half % 8;
  return NumpySum(a, half) + NumpySum(a + half, n - half);
}

}  // namespace

std::vector<double> NormalizeWeights(absl::Span<const double> weights) {
  const double sum = NumpySum(weights.data(), weights.size());
  std::vector<double> out;
  out.reserve(weights.size());
  for (double w : weights) out.push_back(w / sum);
  return out;
}

std::vector<int64_t> SamplesPerDataset(absl::Span<const double> normalized_weights, int64_t size,
                                       double surplus) {
  std::vector<int64_t> out;
  out.reserve(normalized_weights.size());
  for (double w : normalized_weights) {
    const double target = std::ceil(static_cast<double>(size) * w);
    out.push_back(static_cast<int64_t>(std::ceil(target * (1.0 + surplus))));
  }
  return out;
}

BlendIndices BuildBlendingIndices(absl::Span<const double> normalized_weights, int64_t size) {
  const size_t n = normalized_weights.size();
  MF_CHECK(n >= 1 && n < 32767) << n << " datasets";
  MF_CHECK_GE(size, 0);
  BlendIndices out;
  out.dataset_index.resize(size);
  out.dataset_sample_index.resize(size);
  std::vector<int64_t> taken(n, 0);
  for (int64_t i = 0; i < size; ++i) {
    // Megatron compares against max(i, 1), so positions 0 and 1 see the same targets.
    const double x = std::max(static_cast<double>(i), 1.0);
    size_t best = 0;
    double best_error = normalized_weights[0] * x - static_cast<double>(taken[0]);
    for (size_t d = 1; d < n; ++d) {
      const double error = normalized_weights[d] * x - static_cast<double>(taken[d]);
      if (error > best_error) {  // strictly greater: ties go to the first dataset
        best_error = error;
        best = d;
      }
    }
    out.dataset_index[i] = static_cast<int16_t>(best);
    out.dataset_sample_index[i] = taken[best]++;
  }
  return out;
}

}  // namespace moefold::data
