// ByteTokenizer: bytes ↔ ids 0..255, end-of-document id 256.
#include "core/data/byte_tokenizer.h"

#include "absl/strings/str_cat.h"

namespace moefold::data {

std::vector<int32_t> ByteTokenizer::Encode(absl::string_view text, bool append_eod) {
  std::vector<int32_t> ids;
  ids.reserve(text.size() + (append_eod ? 1 : 0));
  // Through unsigned char: a plain char may be signed, and bytes ≥ 0x80 must map to 128..255.
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  if (append_eod) ids.push_back(kEod);
  return ids;
}

absl::StatusOr<std::string> ByteTokenizer::Decode(absl::Span<const int32_t> tokens,
                                                  absl::string_view eod_text) {
  std::string text;
  text.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    if (id >= 0 && id < 256) {
      text.push_back(static_cast<char>(static_cast<unsigned char>(id)));
    } else if (id == kEod) {
      text.append(eod_text.data(), eod_text.size());
    } else {
      return absl::InvalidArgumentError(absl::StrCat("byte tokenizer: token ", id, " at position ",
                                                     i, " is outside the vocabulary [0, ",
                                                     kVocabSize, ")"));
    }
  }
  return text;
}

}  // namespace moefold::data
