// A Hugging Face tokenizer.json with a byte-level BPE model (GPT-2, Llama-3, Qwen2), restated
// (docs/FORMULAS.md §17): added tokens are cut out of the text first and map to their ids; the rest
// is split by the pre-tokenizer's regex (PCRE2, Unicode classes), each piece's bytes are mapped to
// printable characters (GPT-2's byte-to-unicode table), and adjacent symbols are merged by the
// lowest merge rank until none applies; each resulting symbol is a vocabulary entry. Decoding
// maps the characters back to bytes.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/data/tokenizer.h"

namespace moefold::data {

// Parses `json` (the text of a tokenizer.json; `path` names it in errors). InvalidArgument for
// invalid JSON, a model that is not BPE, a pre-tokenizer other than ByteLevel / Split (regex) /
// a Sequence of them, a regex PCRE2 rejects, a merge of unknown symbols, no end-of-text token.
absl::StatusOr<std::unique_ptr<Tokenizer>> ParseHfBpeTokenizer(absl::string_view json,
                                                               absl::string_view path);

// GPT-2's byte → character table: printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
// themselves, the other 68 to U+0100 onwards in byte order. Returns the UTF-8 of byte b's char.
std::string ByteToUnicode(unsigned char b);

}  // namespace moefold::data
