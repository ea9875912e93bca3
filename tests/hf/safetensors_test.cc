// The safetensors reader and writer: round trips of every shape kind, sharded directories, and
// malformed files, each refused with an error that names the file and the tensor at fault.
#include "core/hf/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::hf {
namespace {

using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("mf_safetensors_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // A file with this exact header text and `data_bytes` zero bytes of data.
  std::string WriteRaw(const std::string& name, const std::string& header, size_t data_bytes,
                       uint64_t header_len_override = 0) {
    const std::string path = Path(name);
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = header_len_override > 0 ? header_len_override : header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << std::string(data_bytes, '\0');
    return path;
  }

  std::filesystem::path dir_;
};

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

TEST_F(SafetensorsTest, RoundTripKeepsEveryDTypeShapeAndByte) {
  const Tensor f32 = testing::RandomNormal({2, 3}, 1);
  const Tensor bf16 = testing::RandomNormal({5}, 2).To(DType::kBF16);
  const Tensor f16 = testing::RandomNormal({3, 1, 2}, 3).To(DType::kF16);
  Tensor scalar = Tensor::Empty({}, DType::kF32);
  scalar.data<float>()[0] = 3.5f;
  const Tensor empty = Tensor::Zeros({0, 4}, DType::kF32);
  const Tensor ints = testing::RandomInts({4}, 4, 100);
  const std::string path = Path("a.safetensors");
  ASSERT_OK(WriteSafetensors(path,
                             {{"w.f32", f32}, {"w.bf16", bf16}, {"w.f16", f16}, {"scalar", scalar},
                              {"empty", empty}, {"ids", ints}},
                             {{"format", "pt"}}));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_OK(file);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_EQ(file->entries().size(), 6u);
  for (const auto& [name, t] : std::vector<std::pair<std::string, Tensor>>{
           {"w.f32", f32}, {"w.bf16", bf16}, {"w.f16", f16}, {"scalar", scalar}, {"empty", empty},
           {"ids", ints}}) {
    absl::StatusOr<Tensor> back = file->Read(name);
    ASSERT_OK(back);
    EXPECT_TRUE(SameBytes(*back, t)) << name;
  }
  // The header is padded to 8 bytes and the tensors sit in decreasing dtype size, so each is
  // aligned to its element size.
  uint64_t header_len = 0;
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(&header_len), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(file->Find("w.f32")->begin % 4, 0);
  EXPECT_LT(file->Find("w.f32")->begin, file->Find("w.bf16")->begin);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_F(SafetensorsTest, WriterRefusesDuplicateNames) {
  const Tensor t = Tensor::Zeros({2}, DType::kF32);
  const absl::Status s = WriteSafetensors(Path("d.safetensors"), {{"x", t}, {"x", t}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'x' twice"));
}

TEST_F(SafetensorsTest, ShardedDirectoryReadsByName) {
  const Tensor a = testing::RandomNormal({3}, 5), b = testing::RandomNormal({2, 2}, 6);
  ASSERT_OK(WriteSafetensors(Path("model-00001-of-00002.safetensors"), {{"a", a}}));
  ASSERT_OK(WriteSafetensors(Path("model-00002-of-00002.safetensors"), {{"b", b}}));
  ASSERT_OK(WriteSafetensorsIndex(dir_.string(),
                                  {{"a", "model-00001-of-00002.safetensors"},
                                   {"b", "model-00002-of-00002.safetensors"},
                                   {"c", "model-00002-of-00002.safetensors"}},
                                  a.nbytes() + b.nbytes()));
  absl::StatusOr<SafetensorsDir> dir = SafetensorsDir::Open(dir_.string());
  ASSERT_OK(dir);
  EXPECT_EQ(dir->Names(), (std::vector<std::string>{"a", "b", "c"}));
  absl::StatusOr<Tensor> rb = dir->Read("b");
  ASSERT_OK(rb);
  EXPECT_TRUE(SameBytes(*rb, b));
  // Mapped to a file that lacks it: both named.
  absl::Status s = dir->Read("c").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model-00002-of-00002.safetensors: no tensor 'c'"));
  s = dir->Read("zzz").status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("no tensor 'zzz'"));
}

TEST_F(SafetensorsTest, IndexNamingAFileOutsideTheDirectoryIsRefused) {
  std::ofstream(Path("model.safetensors.index.json"))
      << R"({"metadata": {"total_size": 4}, "weight_map": {"a": "../x.safetensors"}})";
  const absl::Status s = SafetensorsDir::Open(dir_.string()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'a'"));
}

TEST_F(SafetensorsTest, EmptyDirectoryIsNotFound) {
  const absl::Status s = SafetensorsDir::Open(dir_.string()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
}

TEST_F(SafetensorsTest, TruncatedFileNamesTheTensorPastTheEnd) {
  const std::string path = Path("t.safetensors");
  ASSERT_OK(WriteSafetensors(path, {{"first", testing::RandomNormal({4}, 7)},
                                    {"second", testing::RandomNormal({4}, 8)}}));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
  const absl::Status s = SafetensorsFile::Open(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'second'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("truncated"));
  // Shorter than the length field itself.
  std::filesystem::resize_file(path, 5);
  EXPECT_THAT(std::string(SafetensorsFile::Open(path).status().message()), HasSubstr("truncated"));
}

TEST_F(SafetensorsTest, HeaderLengthBeyondTheFile) {
  const std::string path = WriteRaw("h.safetensors", "{}", 0, 1000);
  const absl::Status s = SafetensorsFile::Open(path).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
  EXPECT_THAT(std::string(s.message()), HasSubstr("header length 1000 runs past the end"));
}

TEST_F(SafetensorsTest, OverlappingOffsetsNameBothTensors) {
  const std::string path = WriteRaw(
      "o.safetensors",
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
      R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
      12);
  const std::string m(SafetensorsFile::Open(path).status().message());
  EXPECT_THAT(m, HasSubstr(path));
  EXPECT_THAT(m, HasSubstr("tensor 'b'"));
  EXPECT_THAT(m, HasSubstr("overlap tensor 'a'"));
}

TEST_F(SafetensorsTest, OffsetsOutOfRangeNameTheTensor) {
  const std::string path = WriteRaw(
      "r.safetensors", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8);
  const std::string m(SafetensorsFile::Open(path).status().message());
  EXPECT_THAT(m, HasSubstr(path + ": tensor 'w'"));
  EXPECT_THAT(m, HasSubstr("run past"));
}

TEST_F(SafetensorsTest, ByteCountMustMatchDTypeAndShape) {
  const std::string path = WriteRaw(
      "c.safetensors", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8);
  const std::string m(SafetensorsFile::Open(path).status().message());
  EXPECT_THAT(m, HasSubstr("tensor 'w'"));
  EXPECT_THAT(m, HasSubstr("needs 12"));
}

TEST_F(SafetensorsTest, UnknownDTypeNamesTheTensor) {
  const std::string path = WriteRaw(
      "u.safetensors", R"({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 2]}})", 2);
  const std::string m(SafetensorsFile::Open(path).status().message());
  EXPECT_THAT(m, HasSubstr(path + ": tensor 'w'"));
  EXPECT_THAT(m, HasSubstr("unsupported dtype 'Q7'"));
}

TEST_F(SafetensorsTest, GapsTrailingBytesAndBadJsonAreRefused) {
  std::string path = WriteRaw(
      "g.safetensors", R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}})", 4);
  EXPECT_THAT(std::string(SafetensorsFile::Open(path).status().message()), HasSubstr("gap"));
  path = WriteRaw("x.safetensors", R"({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})", 5);
  EXPECT_THAT(std::string(SafetensorsFile::Open(path).status().message()),
              HasSubstr("3 bytes follow"));
  path = WriteRaw("j.safetensors", "{not json", 0);
  EXPECT_THAT(std::string(SafetensorsFile::Open(path).status().message()),
              HasSubstr("not a JSON object"));
}

TEST_F(SafetensorsTest, MissingTensorAndMissingFileAreNotFound) {
  const std::string path = Path("m.safetensors");
  ASSERT_OK(WriteSafetensors(path, {{"a", Tensor::Zeros({1}, DType::kF32)}}));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_OK(file);
  const absl::Status s = file->Read("b").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(s.message()), path + ": no tensor 'b'");
  EXPECT_EQ(SafetensorsFile::Open(Path("none.safetensors")).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace moefold::hf
