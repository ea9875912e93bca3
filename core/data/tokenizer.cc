// LoadTokenizer: the byte tokenizer behind the Tokenizer interface, and the file-based ones.
#include "core/data/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/data/byte_tokenizer.h"
#include "core/data/hf_bpe_tokenizer.h"
#include "core/data/sentencepiece_tokenizer.h"
#include "core/file_io.h"
#include "core/status.h"

namespace moefold::data {
namespace {

class ByteTokenizerAdapter : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override {
    return ByteTokenizer::Encode(text, /*append_eod=*/false);
  }
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override {
    return ByteTokenizer::Decode(ids);
  }
  int64_t vocab_size() const override { return ByteTokenizer::kVocabSize; }
  int32_t eod() const override { return ByteTokenizer::kEod; }
  std::string name() const override { return "byte"; }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(absl::string_view kind,
                                                         absl::string_view path) {
  if (kind == "byte") return std::unique_ptr<Tokenizer>(new ByteTokenizerAdapter());
  if (kind != "hf" && kind != "sentencepiece") {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer \"", kind, "\" (byte, hf or sentencepiece)"));
  }
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer \"", kind, "\" needs a file (data.tokenizer_path / --tokenizer-path)"));
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(std::string(path), ec)) {
    return absl::NotFoundError(absl::StrCat("tokenizer file ", path, " does not exist"));
  }
  if (kind == "sentencepiece") return LoadSentencePieceTokenizer(std::string(path));
  MF_ASSIGN_OR_RETURN(const std::string json, ReadWholeFile(std::string(path)));
  return ParseHfBpeTokenizer(json, path);
}

absl::Status CheckVocabulary(const Tokenizer& tokenizer, int64_t model_vocab_size) {
  if (tokenizer.vocab_size() > model_vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", tokenizer.name(), " tokenizer's vocabulary has ", tokenizer.vocab_size(),
        " ids but model.vocab_size is ", model_vocab_size, " (raise model.vocab_size to at least ",
        tokenizer.vocab_size(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace moefold::data
