// Indexed dataset: byte layout against docs/FORMULAS.md §11, write→read round trips, and one test
// per corruption asserting the error's code, the file it names and the problem it states.
#include "core/data/indexed_dataset.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "tests/testing/testing.h"

namespace moefold::data {
namespace {

using ::testing::HasSubstr;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
void Put(std::string* bytes, size_t at, T v) {
  std::memcpy(bytes->data() + at, &v, sizeof(T));
}

class IndexedDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/moefold_idx_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    prefix_ = dir_ + "/ds";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Three documents (one empty) of uint16 tokens: S = 3, D = 4, 5 tokens, 10 .bin bytes.
  void WriteSmall(IndexDType dtype = IndexDType::kU16) {
    auto w = IndexedDatasetWriter::Create(prefix_, dtype);
    ASSERT_OK(w);
    ASSERT_OK(w->AddDocument({1, 2, 3}));
    ASSERT_OK(w->AddDocument({}));
    ASSERT_OK(w->AddDocument({250, 7}));
    ASSERT_OK(w->Finalize());
  }
  std::string idx() const { return prefix_ + ".idx"; }
  std::string bin() const { return prefix_ + ".bin"; }

  // Opens and expects `code` with a message that starts with `path` and contains `problem`.
  void ExpectOpenError(absl::StatusCode code, const std::string& path, const std::string& problem) {
    absl::StatusOr<IndexedDataset> ds = IndexedDataset::Open(prefix_);
    ASSERT_FALSE(ds.ok());
    EXPECT_EQ(ds.status().code(), code) << ds.status();
    const std::string message(ds.status().message());
    EXPECT_EQ(message.rfind(path, 0), 0u) << message;
    EXPECT_THAT(message, HasSubstr(problem));
  }

  std::string dir_;
  std::string prefix_;
};

TEST_F(IndexedDatasetTest, WritesMegatronByteLayout) {
  WriteSmall();
  std::string expected("MMIDIDX\0\0", 9);
  auto append = [&expected](const auto& v) {
    expected.append(reinterpret_cast<const char*>(&v), sizeof(v));
  };
  append(uint64_t{1});
  append(uint8_t{8});  // uint16
  append(uint64_t{3});
  append(uint64_t{4});
  for (int32_t length : {3, 0, 2}) append(length);
  for (int64_t pointer : {0, 6, 6}) append(pointer);
  for (int64_t entry : {0, 1, 2, 3}) append(entry);
  EXPECT_EQ(ReadBytes(idx()), expected);
  const std::string bin_bytes = ReadBytes(bin());
  EXPECT_EQ(bin_bytes, std::string("\x01\x00\x02\x00\x03\x00\xfa\x00\x07\x00", 10));
  // Temporaries are gone after Finalize.
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 2);
}

class RoundTripTest : public IndexedDatasetTest,
                      public ::testing::WithParamInterface<IndexDType> {};

TEST_P(RoundTripTest, ReadsBackWhatWasWritten) {
  const IndexDType dtype = GetParam();
  const std::vector<std::vector<int32_t>> docs = {{5, 0, 255, 17}, {}, {42}, {1, 2, 3, 4, 5, 6, 7}};
  {
    auto w = IndexedDatasetWriter::Create(prefix_, dtype);
    ASSERT_OK(w);
    for (const auto& d : docs) ASSERT_OK(w->AddDocument(d));
    EXPECT_EQ(w->num_tokens(), 12);
    ASSERT_OK(w->Finalize());
  }
  auto ds = IndexedDataset::Open(prefix_);
  ASSERT_OK(ds);
  EXPECT_EQ(ds->dtype(), dtype);
  EXPECT_EQ(ds->num_sequences(), 4);
  EXPECT_EQ(ds->num_documents(), 4);
  EXPECT_EQ(ds->num_tokens(), 12);
  EXPECT_FALSE(ds->has_modes());
  int64_t pointer = 0;
  for (int64_t s = 0; s < 4; ++s) {
    ASSERT_EQ(ds->sequence_length(s), static_cast<int64_t>(docs[s].size()));
    EXPECT_EQ(ds->sequence_pointer(s), pointer);
    pointer += ds->sequence_length(s) * IndexDTypeSize(dtype);
    std::vector<int32_t> got(docs[s].size());
    ds->GetTokens(s, 0, static_cast<int64_t>(got.size()), got.data());
    EXPECT_EQ(got, docs[s]);
  }
  for (int64_t i = 0; i <= 4; ++i) EXPECT_EQ(ds->document_index(i), i);
  int32_t middle[3];
  ds->GetTokens(3, 2, 3, middle);
  EXPECT_EQ(std::vector<int32_t>(middle, middle + 3), (std::vector<int32_t>{3, 4, 5}));
  EXPECT_OK(ds->ValidateTokens(256));
}

INSTANTIATE_TEST_SUITE_P(TokenDTypes, RoundTripTest,
                         ::testing::Values(IndexDType::kU8, IndexDType::kU16, IndexDType::kI32,
                                           IndexDType::kI16, IndexDType::kI64));

TEST_F(IndexedDatasetTest, AcceptsOptionalModes) {
  WriteSmall();
  WriteBytes(idx(), ReadBytes(idx()) + std::string(3, '\0'));  // int8 modes[S]
  auto ds = IndexedDataset::Open(prefix_);
  ASSERT_OK(ds);
  EXPECT_TRUE(ds->has_modes());
}

TEST_F(IndexedDatasetTest, MissingFileIsNotFound) {
  ExpectOpenError(absl::StatusCode::kNotFound, idx(), "no such file");
  WriteSmall();
  std::filesystem::remove(bin());
  ExpectOpenError(absl::StatusCode::kNotFound, bin(), "no such file");
}

TEST_F(IndexedDatasetTest, BadMagic) {
  WriteSmall();
  std::string b = ReadBytes(idx());
  b[0] = 'X';
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kInvalidArgument, idx(), "bad magic");
}

TEST_F(IndexedDatasetTest, BadVersion) {
  WriteSmall();
  std::string b = ReadBytes(idx());
  Put<uint64_t>(&b, 9, 2);
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kInvalidArgument, idx(), "bad version 2 (expected 1)");
}

TEST_F(IndexedDatasetTest, BadDTypeCode) {
  WriteSmall();
  std::string b = ReadBytes(idx());
  b[17] = 9;
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kInvalidArgument, idx(), "bad dtype code 9");
  b[17] = 6;
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kInvalidArgument, idx(), "float64");
}

TEST_F(IndexedDatasetTest, TruncatedIdx) {
  WriteSmall();
  std::string b = ReadBytes(idx());
  const size_t full = b.size();  // 34 + 12·3 + 8·4 = 102
  ASSERT_EQ(full, 102u);
  WriteBytes(idx(), b.substr(0, full - 4));
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(), "truncated: expected 102 bytes, found 98");
  WriteBytes(idx(), b.substr(0, 20));
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(), "truncated");
}

TEST_F(IndexedDatasetTest, IdxWithTrailingBytes) {
  WriteSmall();
  WriteBytes(idx(), ReadBytes(idx()) + "xy");
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(), "size mismatch: expected 102 bytes");
}

TEST_F(IndexedDatasetTest, HugeCountsDoNotOverflow) {
  WriteSmall();
  std::string b = ReadBytes(idx());
  Put<uint64_t>(&b, 18, uint64_t{1} << 62);
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(), "truncated");
}

TEST_F(IndexedDatasetTest, TruncatedBin) {
  WriteSmall();
  WriteBytes(bin(), ReadBytes(bin()).substr(0, 7));
  ExpectOpenError(absl::StatusCode::kDataLoss, bin(), "truncated: expected 10 bytes, found 7");
}

TEST_F(IndexedDatasetTest, BinLongerThanIndex) {
  WriteSmall();
  WriteBytes(bin(), ReadBytes(bin()) + "zz");
  ExpectOpenError(absl::StatusCode::kDataLoss, bin(), "size mismatch");
}

TEST_F(IndexedDatasetTest, NegativeLength) {
  WriteSmall();
  std::string b = ReadBytes(idx());
  Put<int32_t>(&b, 34 + 4, -1);
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(), "sequence 1 has negative length -1");
}

TEST_F(IndexedDatasetTest, NonMonotonePointers) {
  WriteSmall();
  std::string b = ReadBytes(idx());
  const size_t pointers = 34 + 12;
  Put<int64_t>(&b, pointers + 8, 2);  // sequence 1 should start at byte 6
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(),
                  "bad pointer: sequence 1 starts at byte 2, expected 6");
}

TEST_F(IndexedDatasetTest, BadDocumentIndex) {
  WriteSmall();
  const std::string good = ReadBytes(idx());
  const size_t docs = 34 + 12 + 24;
  std::string b = good;
  Put<int64_t>(&b, docs + 16, 0);  // 0, 1, 0, 3: decreasing
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(), "bad document index: entry 2 is 0");
  b = good;
  Put<int64_t>(&b, docs + 24, 2);  // 0, 1, 2, 2: does not end at S = 3
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(), "bad document index: last entry is 2");
  b = good;
  Put<int64_t>(&b, docs, 1);  // must start at 0
  WriteBytes(idx(), b);
  ExpectOpenError(absl::StatusCode::kDataLoss, idx(), "bad document index: entry 0 is 1");
}

TEST_F(IndexedDatasetTest, TokenOutOfVocabulary) {
  auto w = IndexedDatasetWriter::Create(prefix_, IndexDType::kI32);
  ASSERT_OK(w);
  ASSERT_OK(w->AddDocument({1, 2}));
  ASSERT_OK(w->AddDocument({3, 300, 4}));
  ASSERT_OK(w->Finalize());
  auto ds = IndexedDataset::Open(prefix_);
  ASSERT_OK(ds);
  EXPECT_OK(ds->ValidateTokens(301));
  const absl::Status s = ds->ValidateTokens(257);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(bin() + ": token id 300 out of range [0, 257) at sequence 1, offset 1"));
}

TEST_F(IndexedDatasetTest, NegativeTokenIsOutOfVocabulary) {
  auto w = IndexedDatasetWriter::Create(prefix_, IndexDType::kI16);
  ASSERT_OK(w);
  ASSERT_OK(w->AddDocument({1, -5}));
  ASSERT_OK(w->Finalize());
  auto ds = IndexedDataset::Open(prefix_);
  ASSERT_OK(ds);
  EXPECT_THAT(std::string(ds->ValidateTokens(1000).message()), HasSubstr("token id -5"));
}

TEST_F(IndexedDatasetTest, WriterRefusesTokensThatDoNotFit) {
  auto w = IndexedDatasetWriter::Create(prefix_, IndexDType::kU8);
  ASSERT_OK(w);
  const absl::Status s = w->AddDocument({1, 256});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("token 256 at offset 1"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("uint8"));
  EXPECT_EQ(IndexedDatasetWriter::Create(prefix_, IndexDType::kF32).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(IndexedDatasetTest, UnfinishedWriterLeavesNothing) {
  WriteSmall();  // an older complete dataset
  {
    auto w = IndexedDatasetWriter::Create(prefix_, IndexDType::kU16);
    ASSERT_OK(w);
    ASSERT_OK(w->AddDocument({9, 9, 9}));
    // Destroyed without Finalize: as if the run was interrupted.
  }
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ds.bin", "ds.idx"}));
  auto ds = IndexedDataset::Open(prefix_);
  ASSERT_OK(ds);
  EXPECT_EQ(ds->num_sequences(), 3);  // the old dataset, untouched
}

}  // namespace
}  // namespace moefold::data
