// Tokenizers: a byte-level BPE tokenizer.json written here (GPT-2 and Llama-3 pre-tokenizers over
// one small vocabulary) with encodings worked out by hand — merges by rank, spaces, newlines,
// non-ASCII, emoji, special tokens, digit groups — and decode(encode(x)) = x; a SentencePiece
// model trained here by the library; the byte tokenizer; bad files and vocabulary checks.
#include "core/data/tokenizer.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/hf_bpe_tokenizer.h"
#include "core/data/sentencepiece_backend.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "tests/testing/testing.h"

namespace moefold::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Byte b's single-character token has id b; then, in merge-rank order:
//   rank 0 "Ġ t" → 256 "Ġt"    rank 4 "hell o" → 260 "hello"   rank 8 "1 2" → 265 "12"
//   rank 1 "l l" → 257 "ll"    rank 5 "h e" → 261 "he"         rank 9 "3 4" → 266 "34"
//   rank 2 "e ll" → 258 "ell"  rank 6 "Ġt he" → 262 "Ġthe"     rank 10 "12 3" → 267 "123"
//   rank 3 "h ell" → 259 "hell" rank 7 "Ċ Ċ" → 263 "ĊĊ"
// and the added special token <|endoftext|> = 264. (Ġ is the space's character, Ċ the newline's.)
// Hugging Face tokenizers 0.23 encodes every case below to the same ids.
std::string TokenizerJson(const nlohmann::json& pre_tokenizer, bool ignore_merges = false,
                          const nlohmann::json& normalizer = nullptr) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToUnicode(static_cast<unsigned char>(b))] = b;
  const std::string sp = ByteToUnicode(' '), nl = ByteToUnicode('\n');
  const std::vector<std::pair<std::string, std::string>> merges = {
      {sp, "t"}, {"l", "l"}, {"e", "ll"}, {"h", "ell"}, {"hell", "o"}, {"h", "e"},
      {sp + "t", "he"}, {nl, nl}, {"1", "2"}, {"3", "4"}, {"12", "3"}};
  const int ids[] = {256, 257, 258, 259, 260, 261, 262, 263, 265, 266, 267};
  nlohmann::json merge_list = nlohmann::json::array();
  for (size_t i = 0; i < merges.size(); ++i) {
    vocab[merges[i].first + merges[i].second] = ids[i];
    merge_list.push_back(merges[i].first + " " + merges[i].second);
  }
  vocab["<|endoftext|>"] = 264;  // GPT-2 keeps its special token in the model's vocabulary too
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 264}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"normalizer", normalizer},
      {"pre_tokenizer", pre_tokenizer},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list},
        {"ignore_merges", ignore_merges}}}};
  return j.dump();
}

const nlohmann::json kGpt2Pre = {
    {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
// Llama-3's: its regex, then ByteLevel without one.
const nlohmann::json kLlama3Pre = {
    {"type", "Sequence"},
    {"pretokenizers",
     {{{"type", "Split"},
       {"pattern",
        {{"Regex",
          R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
       {"behavior", "Isolated"},
       {"invert", false}},
      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/moefold_tok_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  std::unique_ptr<Tokenizer> Load(const std::string& kind, const std::string& path) {
    auto t = LoadTokenizer(kind, path);
    MF_CHECK(t.ok()) << t.status();
    return std::move(t).value();
  }
  static std::vector<int32_t> Ids(const Tokenizer& t, const std::string& text) {
    auto ids = t.Encode(text);
    MF_CHECK(ids.ok()) << ids.status();
    auto back = t.Decode(*ids);
    MF_CHECK(back.ok()) << back.status();
    EXPECT_EQ(*back, text) << "decode(encode(x)) != x";
    return *ids;
  }
  std::string dir_;
};

// Qwen2's normalizer: NFC composes "e" + U+0301 (combining acute) into "é" (U+00E9, bytes C3 A9)
// before the bytes are mapped, so both spellings encode alike; without a normalizer they differ.
TEST_F(TokenizerTest, NfcNormalizerComposesBeforeEncoding) {
  const std::string composed = "caf\xC3\xA9", decomposed = "cafe\xCC\x81";
  auto nfc = Load("hf", WriteFile("nfc.json",
                                  TokenizerJson(kGpt2Pre, false, {{"type", "NFC"}})));
  EXPECT_THAT(Ids(*nfc, composed), ElementsAre('c', 'a', 'f', 0xC3, 0xA9));
  auto ids = nfc->Encode(decomposed);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(*ids, ElementsAre('c', 'a', 'f', 0xC3, 0xA9));
  auto plain = Load("hf", WriteFile("plain.json", TokenizerJson(kGpt2Pre)));
  EXPECT_THAT(Ids(*plain, decomposed), ElementsAre('c', 'a', 'f', 'e', 0xCC, 0x81));
  // Any other normalizer is refused by name.
  const std::string lower = WriteFile("lower.json",
                                      TokenizerJson(kGpt2Pre, false, {{"type", "Lowercase"}}));
  auto refused = LoadTokenizer("hf", lower);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("Lowercase"));
}

TEST_F(TokenizerTest, Gpt2StyleEncodingsByHand) {
  auto t = Load("hf", WriteFile("tokenizer.json", TokenizerJson(kGpt2Pre)));
  EXPECT_EQ(t->vocab_size(), 268);
  EXPECT_EQ(t->eod(), 264);
  // "hello": l l (rank 1) → e ll (2) → h ell (3) → hell o (4), although h e (5) applies at first.
  // " the": Ġ t (0) → h e (5) → Ġt he (6).
  EXPECT_THAT(Ids(*t, "hello the"), ElementsAre(260, 262));
  EXPECT_THAT(Ids(*t, "help"), ElementsAre(261, 'l', 'p'));  // only h e applies
  // Equal ranks: the leftmost pair first. "lll" → ll l; "hellll": l l at 2 (1) → l l at 4 (1) →
  // e ll (2) → h ell (3) → hell ll (no merge).
  EXPECT_THAT(Ids(*t, "lll"), ElementsAre(257, 'l'));
  EXPECT_THAT(Ids(*t, "hellll"), ElementsAre(259, 257));
  // Two spaces: \s+(?!\S) takes the first alone (the second is followed by 'b'), then " b".
  EXPECT_THAT(Ids(*t, "a  b"), ElementsAre('a', ' ', ' ', 'b'));
  // "\n\n" before a letter splits the same way, so Ċ Ċ never meets; at the end it does.
  EXPECT_THAT(Ids(*t, "x\n\ny"), ElementsAre('x', '\n', '\n', 'y'));
  EXPECT_THAT(Ids(*t, "x\n\n"), ElementsAre('x', 263));
  // Non-ASCII: é is C3 A9, both printable in the byte table, one token each; 🙂 is F0 9F 99 82.
  EXPECT_THAT(Ids(*t, "é"), ElementsAre(0xC3, 0xA9));
  EXPECT_THAT(Ids(*t, "🙂"), ElementsAre(0xF0, 0x9F, 0x99, 0x82));
  // Special tokens are cut out before the pre-tokenizer; the text around them is encoded alone.
  EXPECT_THAT(Ids(*t, "hi<|endoftext|>he"), ElementsAre('h', 'i', 264, 261));
  EXPECT_THAT(Ids(*t, "<|endoftext|><|endoftext|>"), ElementsAre(264, 264));
  // GPT-2's regex keeps a run of digits together: 1 2 (8) → 3 4 (9) → "12", "34" (no 12 34).
  EXPECT_THAT(Ids(*t, "1234"), ElementsAre(265, 266));
  // Round trips of mixed text (checked inside Ids).
  Ids(*t, "Grüße, 世界! 🙂🙂 tabs\tand\r\nnewlines\n\n\n  indented <|endoftext|> end ");
  Ids(*t, "");
}

TEST_F(TokenizerTest, Llama3StylePreTokenizer) {
  auto t = Load("hf", WriteFile("tokenizer.json", TokenizerJson(kLlama3Pre)));
  // \p{N}{1,3} cuts "1234" into "123" and "4": 1 2 (8) → 12 3 (10) → "123"; "4" alone.
  EXPECT_THAT(Ids(*t, "1234"), ElementsAre(267, '4'));
  // [^\r\n\p{L}\p{N}]?\p{L}+ keeps the space with the word: " the" → Ġthe.
  EXPECT_THAT(Ids(*t, "hello the"), ElementsAre(260, 262));
  // \s*[\r\n]+ takes both newlines together here, so Ċ Ċ merges.
  EXPECT_THAT(Ids(*t, "x\n\ny"), ElementsAre('x', 263, 'y'));
  Ids(*t, "Grüße, 世界! 🙂 1234567890 <|endoftext|>\n");
}

TEST_F(TokenizerTest, IgnoreMergesTakesWholeWords) {
  // With ignore_merges (Llama-3), a piece that is a vocabulary entry is one token at once: "hell"
  // would otherwise stay h ell → hell anyway, but "Ġthe"-like words skip the ranks; "help" is
  // not in the vocabulary and still merges h e.
  auto t = Load("hf", WriteFile("tokenizer.json", TokenizerJson(kLlama3Pre, true)));
  EXPECT_THAT(Ids(*t, "12"), ElementsAre(265));
  EXPECT_THAT(Ids(*t, "help"), ElementsAre(261, 'l', 'p'));
}

TEST_F(TokenizerTest, BadTokenizerFiles) {
  auto t = LoadTokenizer("hf", WriteFile("broken.json", "{\"model\": {\"type\": \"BPE\""));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("broken.json: not valid JSON"));
  nlohmann::json wordpiece = nlohmann::json::parse(TokenizerJson(kGpt2Pre));
  wordpiece["model"]["type"] = "WordPiece";
  t = LoadTokenizer("hf", WriteFile("wp.json", wordpiece.dump()));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("only BPE"));
  nlohmann::json bad_merge = nlohmann::json::parse(TokenizerJson(kGpt2Pre));
  bad_merge["model"]["merges"].push_back("q z");
  t = LoadTokenizer("hf", WriteFile("merge.json", bad_merge.dump()));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("outside the vocabulary"));
  t = LoadTokenizer("hf", dir_ + "/missing.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  t = LoadTokenizer("sentencepiece", WriteFile("not.model", "garbage"));
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("not a SentencePiece model"));
  t = LoadTokenizer("gpt2", "");
  ASSERT_FALSE(t.ok());
  t = LoadTokenizer("hf", "");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("needs a file"));
}

TEST_F(TokenizerTest, VocabularyLargerThanTheModelIsNamed) {
  auto t = Load("hf", WriteFile("tokenizer.json", TokenizerJson(kGpt2Pre)));
  EXPECT_OK(CheckVocabulary(*t, 268));
  EXPECT_OK(CheckVocabulary(*t, 512));  // padded model vocabularies are fine
  const absl::Status s = CheckVocabulary(*t, 257);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("268 ids but model.vocab_size is 257"));
}

TEST_F(TokenizerTest, ByteTokenizer) {
  auto t = Load("byte", "");
  EXPECT_EQ(t->vocab_size(), 257);
  EXPECT_EQ(t->eod(), 256);
  EXPECT_THAT(Ids(*t, "a\n"), ElementsAre('a', '\n'));
}

TEST_F(TokenizerTest, SentencePieceModelTrainedHere) {
  std::string corpus;
  for (int i = 0; i < 200; ++i) {
    corpus += "the quick brown fox jumps over the lazy dog\n";
    corpus += "hello world, the world says hello back\n";
    corpus += absl::StrCat("line ", i, " of the tiny corpus\n");
  }
  const std::string input = WriteFile("corpus.txt", corpus);
  std::string error;
  ASSERT_TRUE(spm::Train(absl::StrCat("--input=", input, " --model_prefix=", dir_,
                                      "/sp --vocab_size=320 --model_type=bpe "
                                      "--character_coverage=1.0 --byte_fallback=true "
                                      "--hard_vocab_limit=false --minloglevel=2"),
                         &error))
      << error;
  auto t = Load("sentencepiece", dir_ + "/sp.model");
  EXPECT_GT(t->vocab_size(), 259);  // 3 specials, 256 byte pieces, the learnt ones
  EXPECT_EQ(t->eod(), 2);  // SentencePiece's default ids: <unk> 0, <s> 1, </s> 2
  const std::vector<int32_t> ids = Ids(*t, "hello world");
  EXPECT_FALSE(ids.empty());
  EXPECT_LT(ids.size(), 11u);  // merges learnt: fewer pieces than characters
  for (int32_t id : ids) EXPECT_LT(id, t->vocab_size());
  // Byte fallback round-trips text the model never saw.
  Ids(*t, "hello 🙂 wörld");
  auto bad = t->Decode({static_cast<int32_t>(t->vocab_size())});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("not in the vocabulary"));
}

}  // namespace
}  // namespace moefold::data
