// data.tokenizer "sentencepiece" (Llama-2, Mixtral): a SentencePiece .model file, encoded and
// decoded by libsentencepiece; the end-of-document id is the model's EOS (Megatron's choice).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/data/tokenizer.h"

namespace moefold::data {

// InvalidArgument naming the file when it is not a SentencePiece model or has no EOS id.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path);

}  // namespace moefold::data
