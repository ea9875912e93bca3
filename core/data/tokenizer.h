// The tokenizers of data.tokenizer (docs/DECISIONS.md, "Tokenizers"): "byte" (ids = bytes, EOD
// 256), "hf" (a Hugging Face tokenizer.json with a byte-level BPE model: GPT-2, Llama-3, Qwen2)
// and "sentencepiece" (a SentencePiece .model: Llama-2, Mixtral). One interface, so prep-data and
// the trainer's vocabulary check do not care which. Invariant: Decode(Encode(text)) == text for
// valid UTF-8 text (byte: for any bytes).
//
//   MF_ASSIGN_OR_RETURN(auto tok, LoadTokenizer("hf", "tokenizer.json"));
//   MF_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->Encode("Hello world"));
//   ids.push_back(tok->eod());
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moefold::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // The ids of `text`, without an end-of-document token. Thread-safe (const).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const = 0;
  // The text of `ids`; InvalidArgument naming the position of an id outside the vocabulary.
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const = 0;
  // Ids lie in [0, vocab_size()): the largest id + 1 (added tokens included).
  virtual int64_t vocab_size() const = 0;
  // The end-of-document id appended to every document (the tokenizer's end-of-text / EOS token).
  virtual int32_t eod() const = 0;
  virtual std::string name() const = 0;  // "byte", "hf", "sentencepiece"
};

// kind "byte" (path ignored), "hf" (tokenizer.json) or "sentencepiece" (.model). InvalidArgument
// for another kind or a missing path; NotFound for a missing file; InvalidArgument naming the file
// and the problem when it does not parse or is not a supported model.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(absl::string_view kind,
                                                         absl::string_view path);

// InvalidArgument naming both numbers when the tokenizer's vocabulary exceeds the model's
// (model.vocab_size may be larger: padded vocabularies are common).
absl::Status CheckVocabulary(const Tokenizer& tokenizer, int64_t model_vocab_size);

}  // namespace moefold::data
