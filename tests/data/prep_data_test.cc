// Text preparation and the built-in corpus: documents per line / paragraph, byte tokens + EOD, the
// cache that is reused when valid and rebuilt when stale, and the corpus's size.
#include "core/data/prep_data.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/byte_tokenizer.h"
#include "core/data/indexed_dataset.h"
#include "gmock/gmock.h"
#include "tests/testing/testing.h"

namespace moefold::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class PrepDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/moefold_prep_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteText(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  // Decodes every sequence, rendering EOD as "|".
  static std::vector<std::string> Documents(const IndexedDataset& ds) {
    std::vector<std::string> docs;
    for (int64_t s = 0; s < ds.num_sequences(); ++s) {
      std::vector<int32_t> t(ds.sequence_length(s));
      ds.GetTokens(s, 0, static_cast<int64_t>(t.size()), t.data());
      docs.push_back(ByteTokenizer::Decode(t, "|").value());
    }
    return docs;
  }

  std::string dir_;
};

TEST(ByteTokenizerTest, EncodesBytesAndAppendsEod) {
  EXPECT_THAT(ByteTokenizer::Encode("Az\xff"), ElementsAre(65, 122, 255, 256));
  EXPECT_THAT(ByteTokenizer::Encode("", false), ElementsAre());
  const std::string all = [] {
    std::string s;
    for (int b = 0; b < 256; ++b) s.push_back(static_cast<char>(b));
    return s;
  }();
  EXPECT_EQ(ByteTokenizer::Decode(ByteTokenizer::Encode(all)).value(), all);
  const auto bad = ByteTokenizer::Decode({65, 257});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("token 257 at position 1"));
}

TEST_F(PrepDataTest, OneDocumentPerNonBlankLine) {
  const std::string text = WriteText("t.txt", "In the beginning\r\n\n   \nGod said\nlast");
  ASSERT_OK(PrepareTextDataset(text, dir_ + "/lines"));
  auto ds = IndexedDataset::Open(dir_ + "/lines");
  ASSERT_OK(ds);
  EXPECT_EQ(ds->dtype(), IndexDType::kU16);
  EXPECT_THAT(Documents(*ds), ElementsAre("In the beginning|", "God said|", "last|"));
  EXPECT_EQ(ds->num_tokens(), 16 + 1 + 8 + 1 + 4 + 1);
  EXPECT_OK(ds->ValidateTokens(ByteTokenizer::kVocabSize));
}

TEST_F(PrepDataTest, OneDocumentPerParagraph) {
  const std::string text = WriteText("p.txt", "a b\nc\n\n\nd\n \ne\nf\n");
  PrepOptions options;
  options.split = PrepOptions::Split::kParagraph;
  ASSERT_OK(PrepareTextDataset(text, dir_ + "/paras", options));
  auto ds = IndexedDataset::Open(dir_ + "/paras");
  ASSERT_OK(ds);
  EXPECT_THAT(Documents(*ds), ElementsAre("a b\nc|", "d|", "e\nf|"));
}

TEST_F(PrepDataTest, Errors) {
  const absl::Status missing = PrepareTextDataset(dir_ + "/nope.txt", dir_ + "/x");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr(dir_ + "/nope.txt"));
  const absl::Status blank = PrepareTextDataset(WriteText("b.txt", "\n  \n"), dir_ + "/x");
  EXPECT_EQ(blank.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(blank.message()), HasSubstr("no documents"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/x.idx"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/x.bin"));
  PrepOptions u8;
  u8.dtype = IndexDType::kU8;
  EXPECT_EQ(PrepareTextDataset(WriteText("a.txt", "a\n"), dir_ + "/x", u8).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PrepDataTest, BuiltinCorpusPreparesOnceAndRebuildsWhenStale) {
  auto prefix = EnsureBuiltinDataset(dir_ + "/cache");
  ASSERT_OK(prefix);
  EXPECT_EQ(*prefix, dir_ + "/cache/kjv_byte");
  auto ds = IndexedDataset::Open(*prefix);
  ASSERT_OK(ds);
  // 1.95 MB of text, one chapter per line: > 1.5 M byte tokens, 465 documents.
  EXPECT_GT(ds->num_tokens(), 1'500'000);
  EXPECT_EQ(ds->num_sequences(), 465);
  EXPECT_OK(ds->ValidateTokens(ByteTokenizer::kVocabSize));
  std::vector<int32_t> head(16);
  ds->GetTokens(0, 0, 16, head.data());
  EXPECT_EQ(ByteTokenizer::Decode(head).value(), "In the beginning");

  // A valid cache is reused as is (the .idx is not rewritten).
  const auto written = std::filesystem::last_write_time(*prefix + ".idx");
  ASSERT_OK(EnsureBuiltinDataset(dir_ + "/cache"));
  EXPECT_EQ(std::filesystem::last_write_time(*prefix + ".idx"), written);

  // A damaged cache is rebuilt.
  std::filesystem::resize_file(*prefix + ".bin", 100);
  EXPECT_FALSE(IndexedDataset::Open(*prefix).ok());
  ASSERT_OK(EnsureBuiltinDataset(dir_ + "/cache"));
  EXPECT_OK(IndexedDataset::Open(*prefix).status());
}

TEST_F(PrepDataTest, CorpusOverrideFromEnvironment) {
  const std::string corpus = WriteText("mine.txt", "one\ntwo\n");
  ASSERT_EQ(::setenv("MOEFOLD_CORPUS", corpus.c_str(), 1), 0);
  EXPECT_EQ(BuiltinCorpusPath(), corpus);
  auto prefix = EnsureBuiltinDataset(dir_ + "/cache");
  ASSERT_OK(prefix);
  auto ds = IndexedDataset::Open(*prefix);
  ASSERT_OK(ds);
  EXPECT_THAT(Documents(*ds), ElementsAre("one|", "two|"));
  // A different corpus makes the stamp stale: the cache is rebuilt from it.
  const std::string other = WriteText("other.txt", "three\n");
  ASSERT_EQ(::setenv("MOEFOLD_CORPUS", other.c_str(), 1), 0);
  ASSERT_OK(EnsureBuiltinDataset(dir_ + "/cache"));
  auto rebuilt = IndexedDataset::Open(*prefix);
  ASSERT_OK(rebuilt);
  EXPECT_THAT(Documents(*rebuilt), ElementsAre("three|"));

  ASSERT_EQ(::setenv("MOEFOLD_CORPUS", (dir_ + "/missing.txt").c_str(), 1), 0);
  const absl::Status missing = EnsureBuiltinDataset(dir_ + "/cache").status();
  ::unsetenv("MOEFOLD_CORPUS");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("MOEFOLD_CORPUS"));
  EXPECT_THAT(std::string(missing.message()), HasSubstr("missing.txt"));
}

}  // namespace
}  // namespace moefold::data
