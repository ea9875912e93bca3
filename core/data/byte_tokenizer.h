// Byte-level tokenizer: token = byte value (0..255), plus an end-of-document token 256 appended to
// every document. Invariant: Decode(Encode(text)) == text for any bytes; the vocabulary is 257 ids
// (models may pad it, e.g. to a multiple of 128, with ids no text produces).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moefold::data {

class ByteTokenizer {
 public:
  static constexpr int32_t kEod = 256;
  static constexpr int32_t kVocabSize = 257;

  // One token per byte (unsigned value), then kEod when append_eod. Returns text.size() (+1) ids.
  static std::vector<int32_t> Encode(absl::string_view text, bool append_eod = true);

  // Bytes of ids 0..255; each kEod becomes `eod_text` (default: dropped). InvalidArgument naming
  // the position and id for any other id.
  static absl::StatusOr<std::string> Decode(absl::Span<const int32_t> tokens,
                                            absl::string_view eod_text = "");
};

}  // namespace moefold::data
