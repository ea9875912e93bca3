// tokenizer.json byte-level BPE: parsing, pre-tokenization with PCRE2, merges by rank, decoding.
#include "core/data/hf_bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#include <unicode/utypes.h>

#include <algorithm>
#include <array>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace moefold::data {
namespace {

using Json = nlohmann::json;

// GPT-2's pre-tokenizer regex (ByteLevel with use_regex).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Code point of each byte in GPT-2's table.
std::array<uint32_t, 256> ByteCodePoints() {
  std::array<uint32_t, 256> cp{};
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    cp[b] = printable ? static_cast<uint32_t>(b) : next++;
  }
  return cp;
}

// A compiled PCRE2 pattern (shared by threads; each match gets its own match data).
// Unicode canonical composition (NFC) of UTF-8 text, as Hugging Face's NFC normalizer applies it
// to the text between added tokens.
absl::StatusOr<std::string> NfcNormalize(absl::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) {
    return absl::InternalError(absl::StrCat("ICU NFC normalizer: ", u_errorName(status)));
  }
  const icu::UnicodeString in =
      icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  const icu::UnicodeString out = nfc->normalize(in, status);
  if (U_FAILURE(status)) {
    return absl::InvalidArgumentError(absl::StrCat("NFC normalization: ", u_errorName(status)));
  }
  std::string result;
  out.toUTF8String(result);
  return result;
}

class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<Regex>> Compile(const std::string& pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat("regex \"", pattern, "\" does not compile (",
                                                     reinterpret_cast<char*>(message),
                                                     " at offset ", offset, ")"));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT fails
    auto regex = std::make_shared<Regex>();
    regex->code_ = code;
    return regex;
  }
  ~Regex() { pcre2_code_free(code_); }

  // Appends the pieces of text: each match, and each stretch between matches (HF's "Isolated").
  absl::Status Split(absl::string_view text, std::vector<absl::string_view>* pieces) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t at = 0, gap = 0;
    absl::Status status;
    while (at <= text.size()) {
      // The text was checked as UTF-8 by the first match; later ones skip the check.
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at,
                                 at == 0 ? 0 : PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        status = absl::InvalidArgumentError(
            absl::StrCat("pre-tokenizer: ", reinterpret_cast<char*>(message), " (byte ",
                         pcre2_get_startchar(md), ")"));
        break;
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t begin = ov[0], end = ov[1];
      if (begin > gap) pieces->push_back(text.substr(gap, begin - gap));
      if (end > begin) pieces->push_back(text.substr(begin, end - begin));
      gap = end;
      if (end == begin) {
        // An empty match: step over one UTF-8 character.
        at = end + 1;
        while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) ++at;
      } else {
        at = end;
      }
    }
    if (status.ok() && gap < text.size()) pieces->push_back(text.substr(gap));
    pcre2_match_data_free(md);
    return status;
  }

 private:
  pcre2_code* code_ = nullptr;
};

// One pre-tokenizer step.
struct PreStep {
  std::shared_ptr<Regex> regex;  // split by it (null: no split)
  bool byte_level = false;       // map bytes to GPT-2 characters (done once, at the end)
};

class HfBpeTokenizer : public Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  int32_t eod() const override { return eod_; }
  std::string name() const override { return "hf"; }

  absl::Status Load(const Json& j, absl::string_view path);

 private:
  struct Added {
    std::string content;
    int32_t id;
  };
  // The pieces of a text without added tokens, then their BPE ids.
  absl::Status EncodeSegment(absl::string_view segment, std::vector<int32_t>* ids) const;
  void EncodeWord(absl::string_view mapped, std::vector<int32_t>* ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;  // "" for ids without an entry
  std::vector<bool> is_added_;
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) → (rank, merged)
  bool ignore_merges_ = false;
  bool nfc_ = false;  // the normalizer is NFC: segments are composed before pre-tokenization
  bool add_prefix_space_ = false;
  std::vector<PreStep> steps_;
  // Added tokens by first byte, longest first (the longest match at a position wins).
  std::array<std::vector<Added>, 256> added_by_byte_;
  std::array<std::string, 256> byte_char_;  // GPT-2 character of each byte (UTF-8)
  std::array<int32_t, 256> byte_id_{};      // its vocabulary id (−1: none)
  absl::flat_hash_map<uint32_t, unsigned char> char_byte_;  // code point → byte
  int32_t eod_ = -1;
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

absl::Status HfBpeTokenizer::Load(const Json& j, absl::string_view path) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
  };
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) {
    return bad("no \"model\" object (not a Hugging Face tokenizer.json)");
  }
  const Json& model = j["model"];
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") return bad(absl::StrCat("model type \"", type, "\" (only BPE is supported)"));
  if (!model.contains("vocab") || !model["vocab"].is_object()) return bad("model.vocab missing");
  int64_t max_id = -1;
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return bad(absl::StrCat("model.vocab[\"", token, "\"] is not an id"));
    }
    vocab_[token] = id.get<int32_t>();
    max_id = std::max<int64_t>(max_id, id.get<int64_t>());
  }
  std::vector<Added> added;
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const Json& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          !a.contains("content") || !a["content"].is_string() || a["id"].get<int64_t>() < 0) {
        return bad("an added_tokens entry without an id and a content");
      }
      added.push_back({a["content"].get<std::string>(), a["id"].get<int32_t>()});
      max_id = std::max<int64_t>(max_id, a["id"].get<int64_t>());
    }
  }
  id_to_token_.assign(max_id + 1, std::string());
  is_added_.assign(max_id + 1, false);
  for (const auto& [token, id] : vocab_) id_to_token_[id] = token;
  for (const Added& a : added) {
    if (a.content.empty()) return bad("an added token with empty content");
    id_to_token_[a.id] = a.content;
    is_added_[a.id] = true;
    added_by_byte_[static_cast<unsigned char>(a.content[0])].push_back(a);
  }
  for (auto& list : added_by_byte_) {
    std::stable_sort(list.begin(), list.end(), [](const Added& x, const Added& y) {
      return x.content.size() > y.content.size();
    });
  }

  ignore_merges_ = model.value("ignore_merges", false);
  if (!model.contains("merges") || !model["merges"].is_array()) return bad("model.merges missing");
  int32_t rank = 0;
  for (const Json& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos) return bad(absl::StrCat("merge \"", s, "\" has no space"));
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return bad(absl::StrCat("merge ", rank, " is neither \"a b\" nor [a, b]"));
    }
    auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
    if (ia == vocab_.end() || ib == vocab_.end() || im == vocab_.end()) {
      return bad(absl::StrCat("merge ", rank, " (\"", a, "\", \"", b,
                              "\") uses or makes a token outside the vocabulary"));
    }
    merges_.try_emplace(PairKey(ia->second, ib->second), rank, im->second);
    ++rank;
  }

  // Pre-tokenizer: ByteLevel, Split(Regex), or a Sequence of them; byte-level is required.
  std::vector<const Json*> pre;
  if (j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object()) {
    const Json& p = j["pre_tokenizer"];
    if (p.value("type", std::string()) == "Sequence") {
      for (const Json& q : p["pretokenizers"]) pre.push_back(&q);
    } else {
      pre.push_back(&p);
    }
  }
  bool byte_level = false;
  for (const Json* q : pre) {
    const std::string t = q->value("type", std::string());
    PreStep step;
    if (t == "ByteLevel") {
      step.byte_level = byte_level = true;
      add_prefix_space_ = add_prefix_space_ || q->value("add_prefix_space", false);
      if (q->value("use_regex", true)) {
        MF_ASSIGN_OR_RETURN(step.regex, Regex::Compile(kGpt2Pattern));
      }
    } else if (t == "Split") {
      const Json& pattern = (*q)["pattern"];
      if (q->value("behavior", std::string("Isolated")) != "Isolated" || q->value("invert", false) ||
          !pattern.is_object() || !pattern.contains("Regex")) {
        return bad("pre_tokenizer Split is supported with a Regex pattern, behavior Isolated");
      }
      auto regex = Regex::Compile(pattern["Regex"].get<std::string>());
      if (!regex.ok()) return bad(regex.status().message());
      step.regex = *regex;
    } else {
      return bad(absl::StrCat("pre_tokenizer \"", t, "\" is not supported (ByteLevel, Split)"));
    }
    steps_.push_back(std::move(step));
  }
  if (!byte_level) return bad("not a byte-level BPE (no ByteLevel pre-tokenizer)");
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const std::string t = j["normalizer"].value("type", std::string());
    // NFC (Qwen2's) through ICU; other normalizers would change the text in ways not built here.
    if (t != "NFC") return bad(absl::StrCat("normalizer \"", t, "\" is not supported (NFC)"));
    nfc_ = true;
  }

  const std::array<uint32_t, 256> cps = ByteCodePoints();
  for (int b = 0; b < 256; ++b) {
    AppendUtf8(cps[b], &byte_char_[b]);
    char_byte_[cps[b]] = static_cast<unsigned char>(b);
    auto it = vocab_.find(byte_char_[b]);
    byte_id_[b] = it == vocab_.end() ? -1 : it->second;
  }
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"}) {
    for (const Added& a : added) {
      if (a.content == name && eod_ < 0) eod_ = a.id;
    }
    if (auto it = vocab_.find(name); eod_ < 0 && it != vocab_.end()) eod_ = it->second;
  }
  if (eod_ < 0) {
    return bad("no end-of-text token (<|endoftext|>, <|end_of_text|>, </s> or <eos>)");
  }
  return absl::OkStatus();
}

void HfBpeTokenizer::EncodeWord(absl::string_view mapped, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    if (auto it = vocab_.find(mapped); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Symbols start as single characters (UTF-8 sequences of the mapped bytes).
  std::vector<int32_t> symbols;
  for (size_t i = 0; i < mapped.size();) {
    size_t n = 1;
    while (i + n < mapped.size() && (static_cast<unsigned char>(mapped[i + n]) & 0xC0) == 0x80) ++n;
    auto it = vocab_.find(mapped.substr(i, n));
    symbols.push_back(it == vocab_.end() ? -1 : it->second);
    i += n;
  }
  // Merge the lowest-ranked adjacent pair (the leftmost on ties) until none is in the merges.
  while (symbols.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max(), merged = -1;
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merges_.find(PairKey(symbols[i], symbols[i + 1]));
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        merged = it->second.second;
        best = i;
      }
    }
    if (merged < 0) break;
    symbols[best] = merged;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  ids->insert(ids->end(), symbols.begin(), symbols.end());
}

absl::Status HfBpeTokenizer::EncodeSegment(absl::string_view segment,
                                           std::vector<int32_t>* ids) const {
  std::string normalized;
  if (nfc_) {
    MF_ASSIGN_OR_RETURN(normalized, NfcNormalize(segment));
    segment = normalized;
  }
  std::string prefixed;
  if (add_prefix_space_ && !segment.empty() && segment[0] != ' ') {
    prefixed = absl::StrCat(" ", segment);  // ByteLevel's add_prefix_space
    segment = prefixed;
  }
  std::vector<absl::string_view> pieces = {segment};
  for (const PreStep& step : steps_) {
    if (step.regex == nullptr) continue;
    std::vector<absl::string_view> next;
    for (absl::string_view p : pieces) MF_RETURN_IF_ERROR(step.regex->Split(p, &next));
    pieces = std::move(next);
  }
  std::string mapped;
  for (absl::string_view p : pieces) {
    mapped.clear();
    for (unsigned char c : p) {
      if (byte_id_[c] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("byte 0x", absl::Hex(c), " has no vocabulary entry"));
      }
      mapped += byte_char_[c];
    }
    EncodeWord(mapped, ids);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> HfBpeTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  size_t start = 0;  // of the text not yet encoded
  for (size_t i = 0; i < text.size(); ++i) {
    for (const Added& a : added_by_byte_[static_cast<unsigned char>(text[i])]) {
      if (text.substr(i, a.content.size()) != a.content) continue;
      if (i > start) MF_RETURN_IF_ERROR(EncodeSegment(text.substr(start, i - start), &ids));
      ids.push_back(a.id);
      start = i + a.content.size();
      i = start - 1;
      break;
    }
  }
  if (start < text.size()) MF_RETURN_IF_ERROR(EncodeSegment(text.substr(start), &ids));
  return ids;
}

absl::StatusOr<std::string> HfBpeTokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string out;
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    if (id < 0 || id >= vocab_size() || id_to_token_[id].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("id ", id, " at position ", k,
                                                     " is not in the vocabulary"));
    }
    const std::string& token = id_to_token_[id];
    if (is_added_[id]) {
      out += token;
      continue;
    }
    for (size_t i = 0; i < token.size();) {
      // Decode one UTF-8 character (the table's code points are < U+0800: 1 or 2 bytes).
      const auto c0 = static_cast<unsigned char>(token[i]);
      uint32_t cp = c0;
      size_t n = 1;
      if (c0 >= 0xC0 && c0 < 0xE0 && i + 1 < token.size()) {
        cp = ((c0 & 0x1F) << 6) | (static_cast<unsigned char>(token[i + 1]) & 0x3F);
        n = 2;
      }
      auto it = char_byte_.find(cp);
      if (it == char_byte_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("token ", id, " holds a character outside the byte table"));
      }
      out.push_back(static_cast<char>(it->second));
      i += n;
    }
  }
  return out;
}

}  // namespace

std::string ByteToUnicode(unsigned char b) {
  static const std::array<uint32_t, 256> cps = ByteCodePoints();
  std::string s;
  AppendUtf8(cps[b], &s);
  return s;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> ParseHfBpeTokenizer(absl::string_view json,
                                                               absl::string_view path) {
  Json j = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  auto tokenizer = std::make_unique<HfBpeTokenizer>();
  try {
    MF_RETURN_IF_ERROR(tokenizer->Load(j, path));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace moefold::data
