// JSONL preparation (Megatron's preprocess_data.py): the .idx/.bin bytes of a small corpus against
// a layout written out by hand (and equal to what Megatron-LM 0.16.1's IndexedDatasetBuilder writes
// for the same ids), zstd input, the dtype by vocabulary size, many workers giving the same bytes
// as one, and malformed lines reported by line number (stop) or left out (skip).
#include "core/data/prep_jsonl.h"

#include <unistd.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/indexed_dataset.h"
#include "gmock/gmock.h"
#include "tests/testing/testing.h"

namespace moefold::data {
namespace {

using ::testing::HasSubstr;

class PrepJsonlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/moefold_jsonl_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    auto t = LoadTokenizer("byte", "");
    MF_CHECK(t.ok());
    byte_ = std::move(*t);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string WriteFile(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string dir_;
  std::unique_ptr<Tokenizer> byte_;
};

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

constexpr char kCorpus[] =
    "{\"text\": \"ab\", \"id\": 1}\n"
    "{\"text\": \"\"}\n"
    "{\"meta\": {\"text\": \"not this\"}, \"text\": \"c\\u00e9\"}\n";

// The layout by hand: documents "ab" → 97 98 256, "" → no sequence (a repeated document-index
// entry, no end-of-document id), "cé" → 99 195 169 256; byte vocabulary 257 < 65500 → uint16.
std::pair<std::string, std::string> ExpectedFiles() {
  std::string idx = std::string("MMIDIDX\0\0", 9);
  Put<uint64_t>(&idx, 1);   // version
  Put<uint8_t>(&idx, 8);    // dtype code 8 = uint16
  Put<uint64_t>(&idx, 2);   // sequences
  Put<uint64_t>(&idx, 4);   // document-index entries (3 documents + 1)
  Put<int32_t>(&idx, 3);    // lengths
  Put<int32_t>(&idx, 4);
  Put<int64_t>(&idx, 0);    // byte pointers
  Put<int64_t>(&idx, 6);
  for (int64_t d : {0, 1, 1, 2}) Put<int64_t>(&idx, d);
  std::string bin;
  for (uint16_t t : {97, 98, 256, 99, 195, 169, 256}) Put<uint16_t>(&bin, t);
  return {idx, bin};
}

TEST_F(PrepJsonlTest, LayoutMatchesTheHandWrittenOne) {
  const std::string input = WriteFile("corpus.jsonl", kCorpus);
  auto stats = PrepareJsonlDataset(input, *byte_, dir_ + "/out", {.workers = 1});
  ASSERT_OK(stats);
  EXPECT_EQ(stats->lines, 3);
  EXPECT_EQ(stats->documents, 3);
  EXPECT_EQ(stats->tokens, 7);
  const auto [idx, bin] = ExpectedFiles();
  EXPECT_EQ(Read(dir_ + "/out.idx"), idx);
  EXPECT_EQ(Read(dir_ + "/out.bin"), bin);
  // And our reader takes it: 3 documents, the empty one without a sequence.
  auto ds = IndexedDataset::Open(dir_ + "/out");
  ASSERT_OK(ds);
  EXPECT_EQ(ds->num_documents(), 3);
  EXPECT_EQ(ds->num_sequences(), 2);
}

TEST_F(PrepJsonlTest, ZstdInputAndManyWorkersGiveTheSameBytes) {
  // 3000 documents in a few zstd frames' worth of input, 1 worker (plain) against 7 (zstd).
  std::string corpus;
  for (int i = 0; i < 3000; ++i) corpus += absl::StrCat("{\"text\": \"document ", i, "\"}\n");
  const std::string plain = WriteFile("many.jsonl", corpus);
  std::string compressed(ZSTD_compressBound(corpus.size()), '\0');
  compressed.resize(ZSTD_compress(compressed.data(), compressed.size(), corpus.data(),
                                  corpus.size(), 3));
  const std::string zst = WriteFile("many.jsonl.zst", compressed);
  ASSERT_OK(PrepareJsonlDataset(plain, *byte_, dir_ + "/one", {.workers = 1}));
  auto stats = PrepareJsonlDataset(zst, *byte_, dir_ + "/seven", {.workers = 7});
  ASSERT_OK(stats);
  EXPECT_EQ(stats->documents, 3000);
  EXPECT_EQ(Read(dir_ + "/one.idx"), Read(dir_ + "/seven.idx"));
  EXPECT_EQ(Read(dir_ + "/one.bin"), Read(dir_ + "/seven.bin"));
  // A truncated or corrupt stream is an error naming the file.
  const std::string cut = WriteFile("cut.jsonl.zst", compressed.substr(0, compressed.size() / 2));
  auto bad = PrepareJsonlDataset(cut, *byte_, dir_ + "/cut", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("cut.jsonl.zst"));
  EXPECT_THAT(bad.status().message(), HasSubstr("zstd"));
}

TEST_F(PrepJsonlTest, DTypeByVocabularySize) {
  EXPECT_EQ(DTypeForVocabulary(257), IndexDType::kU16);
  EXPECT_EQ(DTypeForVocabulary(65499), IndexDType::kU16);
  EXPECT_EQ(DTypeForVocabulary(65500), IndexDType::kI32);  // Megatron's optimal_dtype
  EXPECT_EQ(DTypeForVocabulary(128256), IndexDType::kI32);
}

TEST_F(PrepJsonlTest, MalformedLinesAreNamedOrSkipped) {
  const std::string input = WriteFile(
      "bad.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"no text key\"}\n{not json\n{\"text\": 5}\n"
                   "{\"text\": \"fine\"}\n");
  auto stop = PrepareJsonlDataset(input, *byte_, dir_ + "/stop", {});
  ASSERT_FALSE(stop.ok());
  EXPECT_EQ(stop.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(stop.status().message(), HasSubstr("bad.jsonl:2: no key \"text\""));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/stop.idx"));  // nothing half-written
  auto skip = PrepareJsonlDataset(input, *byte_, dir_ + "/skip", {.skip_bad_lines = true});
  ASSERT_OK(skip);
  EXPECT_EQ(skip->skipped, 3);
  EXPECT_EQ(skip->documents, 2);
  EXPECT_EQ(skip->tokens, 3 + 5);
  // Another key.
  auto other = PrepareJsonlDataset(input, *byte_, dir_ + "/other",
                                   {.json_key = "body", .skip_bad_lines = true});
  ASSERT_OK(other);
  EXPECT_EQ(other->documents, 1);
  auto missing = PrepareJsonlDataset(dir_ + "/none.jsonl", *byte_, dir_ + "/x", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moefold::data
