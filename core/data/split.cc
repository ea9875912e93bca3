// Megatron's parse_and_normalize_split and split matrix, restated.
#include "core/data/split.h"

#include <cmath>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace moefold::data {

const char* SplitName(SplitKind kind) {
  switch (kind) {
    case SplitKind::kTrain: return "train";
    case SplitKind::kValid: return "valid";
    case SplitKind::kTest: return "test";
  }
  return "?";
}

absl::StatusOr<SplitShares> ParseSplit(absl::string_view split) {
  SplitShares shares = {1, 0, 0};
  if (absl::StripAsciiWhitespace(split).empty()) return shares;
  const std::vector<absl::string_view> parts = absl::StrSplit(split, absl::ByAnyChar(",/"));
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("data.split \"", split, "\": ", why));
  };
  if (parts.size() > 3) return bad("more than three shares (train, valid, test)");
  std::array<double, 3> raw = {0, 0, 0};
  for (size_t i = 0; i < parts.size(); ++i) {
    const absl::string_view part = absl::StripAsciiWhitespace(parts[i]);
    if (!absl::SimpleAtod(part, &raw[i]) || !std::isfinite(raw[i])) {
      return bad(absl::StrCat("\"", part, "\" is not a number"));
    }
    if (raw[i] < 0) return bad(absl::StrCat("share ", part, " is negative"));
  }
  // NumPy's normalize: w / sum(w) in float64 (the sum in order, as numpy.sum does for 3 values).
  const double sum = raw[0] + raw[1] + raw[2];
  if (!(sum > 0)) return bad("the shares sum to 0");
  if (raw[0] == 0) return bad("the train share is 0 (nothing to train on)");
  for (int i = 0; i < 3; ++i) shares[i] = raw[i] / sum;
  return shares;
}

std::array<std::optional<DocumentRange>, 3> SplitRanges(const SplitShares& shares, int64_t n) {
  // Book-ends 0, s0, s0+s1, s0+s1+s2 summed left to right as Python's reduce does.
  const std::array<double, 4> ends = {0.0, shares[0], shares[0] + shares[1],
                                      shares[0] + shares[1] + shares[2]};
  std::array<std::optional<DocumentRange>, 3> ranges;
  for (int k = 0; k < 3; ++k) {
    if (ends[k + 1] <= ends[k]) continue;  // a zero share: Megatron builds no dataset
    // int(round(x)): Python rounds half to even, as nearbyint does in the default rounding mode.
    const auto at = [&](double b) {
      return static_cast<int64_t>(std::nearbyint(b * static_cast<double>(n)));
    };
    ranges[k] = DocumentRange{at(ends[k]), at(ends[k + 1])};
  }
  return ranges;
}

}  // namespace moefold::data
