// data.tokenizer "sentencepiece": a SentencePiece model through Debian's libsentencepiece.
#include "core/data/sentencepiece_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "core/data/sentencepiece_backend.h"

namespace moefold::data {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::shared_ptr<const spm::Model> model)
      : model_(std::move(model)), eod_(spm::EosId(*model_)) {}
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override {
    std::vector<int> ids;
    std::string error;
    if (!spm::Encode(*model_, std::string(text), &ids, &error)) {
      return absl::InternalError(absl::StrCat("sentencepiece: ", error));
    }
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override {
    for (size_t k = 0; k < ids.size(); ++k) {
      if (ids[k] < 0 || ids[k] >= vocab_size()) {
        return absl::InvalidArgumentError(absl::StrCat("id ", ids[k], " at position ", k,
                                                       " is not in the vocabulary"));
      }
    }
    std::string text, error;
    if (!spm::Decode(*model_, std::vector<int>(ids.begin(), ids.end()), &text, &error)) {
      return absl::InternalError(absl::StrCat("sentencepiece: ", error));
    }
    return text;
  }
  int64_t vocab_size() const override { return spm::PieceSize(*model_); }
  int32_t eod() const override { return eod_; }
  std::string name() const override { return "sentencepiece"; }

 private:
  std::shared_ptr<const spm::Model> model_;
  int32_t eod_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path) {
  std::string error;
  std::shared_ptr<const spm::Model> model = spm::Load(path, &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a SentencePiece model (", error, ")"));
  }
  // Megatron's SentencePiece tokenizer ends documents with the model's EOS id.
  if (spm::EosId(*model) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the model has no EOS id"));
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(model)));
}

}  // namespace moefold::data
