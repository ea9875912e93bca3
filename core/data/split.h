// Train/validation/test splits as Megatron-LM's --split (docs/FORMULAS.md §16): "969,30,1" is
// normalised to shares, the shares' cumulative sums are book-ends, and split k owns the sequences
// [round(b_k·N), round(b_{k+1}·N)) of the dataset (round half to even, as Python's round).
// Invariant: the three ranges are contiguous, in order, and cover [0, N) exactly.
//
//   MF_ASSIGN_OR_RETURN(SplitShares shares, ParseSplit("969,30,1"));
//   std::array<std::optional<DocumentRange>, 3> r = SplitRanges(shares, ds.num_sequences());
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moefold::data {

enum class SplitKind { kTrain = 0, kValid = 1, kTest = 2 };
const char* SplitName(SplitKind kind);  // "train", "valid", "test"

// Sequence ids [begin, end) of one split.
struct DocumentRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

// Normalised shares (train, valid, test), summing to 1.
using SplitShares = std::array<double, 3>;

// "a,b,c" (or "a,b", "a": missing shares are 0; "" = "1,0,0"), numbers ≥ 0 separated by commas or
// slashes. InvalidArgument naming the string when a part is not a number, is negative, there are
// more than three, they sum to 0, or the train share is 0 (nothing to train on).
absl::StatusOr<SplitShares> ParseSplit(absl::string_view split);

// Megatron's split matrix applied to n sequences: split k is absent (nullopt) when its share is 0
// (its book-ends coincide), else [round(b_k·n), round(b_{k+1}·n)) with b the cumulative sums of
// the shares (b_0 = 0) in double precision. A present range may still be empty for small n.
std::array<std::optional<DocumentRange>, 3> SplitRanges(const SplitShares& shares, int64_t n);

}  // namespace moefold::data
