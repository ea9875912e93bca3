// Crash-safe files: WriteFileAtomically leaves only the final file, a shard written piece by piece
// reads back exactly, and a damaged shard is caught — a flipped byte by its piece's checksum
// (naming the file and the tensor), a truncated or missing file on open (naming the file).
#include "checkpoint/files.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "tests/checkpoint/scratch_dir.h"
#include "tests/testing/testing.h"

namespace moefold::checkpoint {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

Piece Meta(const std::string& tensor, int64_t n) {
  Piece p;
  p.set_tensor(tensor);
  p.set_kind("param");
  p.add_box_offset(0);
  p.add_box_shape(n);
  p.set_flat_begin(0);
  p.set_flat_end(n);
  return p;
}

// Writes two tensors (a: 5 values, b: 7 values) into DIR/rank-00000.bin.
struct WrittenShard {
  std::string path;
  ShardFile file;
  std::vector<Piece> pieces;
  std::vector<std::vector<float>> values;
};

WrittenShard WriteTwoPieces(const std::string& dir) {
  WrittenShard w;
  w.path = dir + "/rank-00000.bin";
  w.values = {{1, 2, 3, 4, 5}, {-1.5f, 0.25f, 7, 8, 9, 10, 1e-30f}};
  ShardFileWriter writer;
  EXPECT_OK(writer.Open(w.path));
  for (const auto& [name, v] :
       {std::pair<std::string, const std::vector<float>*>{"model.a", &w.values[0]},
        {"model.b", &w.values[1]}}) {
    Piece p = Meta(name, static_cast<int64_t>(v->size()));
    int64_t offset = -1;
    uint64_t hash = 0;
    EXPECT_OK(writer.Append(v->data(), v->size() * sizeof(float), &offset, &hash));
    EXPECT_EQ(hash, Xxh3(v->data(), v->size() * sizeof(float)));
    p.set_byte_offset(offset);
    p.set_xxh3(hash);
    w.pieces.push_back(p);
  }
  auto file = writer.Finish();
  EXPECT_OK(file);
  if (file.ok()) w.file = *file;
  return w;
}

TEST(FilesTest, WriteFileAtomicallyLeavesOnlyTheFinalFile) {
  ScratchDir dir("atomic");
  const std::string path = dir.path() + "/latest";
  ASSERT_OK(WriteFileAtomically(path, "step-00000003\n"));
  ASSERT_OK(WriteFileAtomically(path, "step-00000006\n"));  // replaces it
  EXPECT_THAT(Entries(dir.path()), ::testing::ElementsAre("latest"));
  auto bytes = ReadWholeFile(path);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, "step-00000006\n");
}

TEST(FilesTest, WriteFileAtomicallyNamesThePathWhenItCannot) {
  ScratchDir dir("atomic-fail");
  const std::string path = dir.path() + "/no-such-dir/manifest.pb";
  const absl::Status status = WriteFileAtomically(path, "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr(path + ".tmp"));
  EXPECT_TRUE(Entries(dir.path()).empty());
  EXPECT_THAT(ReadWholeFile(path).status().message(), HasSubstr(path));
}

TEST(FilesTest, ShardRoundTripIsExactAndChecksummed) {
  ScratchDir dir("shard");
  const WrittenShard w = WriteTwoPieces(dir.path());
  EXPECT_THAT(Entries(dir.path()), ::testing::ElementsAre("rank-00000.bin"));  // no .tmp left
  EXPECT_EQ(w.file.name(), "rank-00000.bin");
  EXPECT_EQ(w.file.bytes(), 12 * 4);
  EXPECT_EQ(w.pieces[0].byte_offset(), 0);
  EXPECT_EQ(w.pieces[1].byte_offset(), 20);
  auto bytes = ReadWholeFile(w.path);
  ASSERT_OK(bytes);
  EXPECT_EQ(w.file.xxh3(), Xxh3(bytes->data(), bytes->size()));

  ShardFileReader reader;
  ASSERT_OK(reader.Open(w.path, w.file));
  for (size_t i = 0; i < w.pieces.size(); ++i) {
    std::vector<float> out(w.values[i].size(), 0);
    ASSERT_OK(reader.ReadPiece(w.pieces[i], out.data()));
    EXPECT_EQ(out, w.values[i]) << w.pieces[i].tensor();
  }
  EXPECT_OK(reader.VerifyWholeFile());
}

TEST(FilesTest, AWriterDestroyedBeforeFinishLeavesNoFile) {
  ScratchDir dir("abandoned");
  {
    ShardFileWriter writer;
    ASSERT_OK(writer.Open(dir.path() + "/rank-00001.bin"));
    const float v[3] = {1, 2, 3};
    int64_t offset = 0;
    uint64_t hash = 0;
    ASSERT_OK(writer.Append(v, sizeof(v), &offset, &hash));
    EXPECT_THAT(Entries(dir.path()), ::testing::ElementsAre("rank-00001.bin.tmp"));
  }
  EXPECT_TRUE(Entries(dir.path()).empty());
}

TEST(FilesTest, AFlippedByteFailsThePieceNamingTheFileAndTheTensor) {
  ScratchDir dir("flipped");
  const WrittenShard w = WriteTwoPieces(dir.path());
  {
    std::fstream f(w.path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(20 + 9);  // inside model.b
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(20 + 9);
    f.write(&c, 1);
  }
  ShardFileReader reader;
  ASSERT_OK(reader.Open(w.path, w.file));  // the size is right
  std::vector<float> out(7);
  ASSERT_OK(reader.ReadPiece(w.pieces[0], out.data()));  // model.a is untouched
  const absl::Status status = reader.ReadPiece(w.pieces[1], out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr(w.path));
  EXPECT_THAT(status.message(), HasSubstr("model.b"));
  EXPECT_THAT(status.message(), HasSubstr("checksum"));
  const absl::Status whole = reader.VerifyWholeFile();
  EXPECT_EQ(whole.code(), absl::StatusCode::kDataLoss) << whole;
  EXPECT_THAT(whole.message(), HasSubstr(w.path));
}

TEST(FilesTest, ATruncatedOrMissingFileFailsOnOpenNamingTheFile) {
  ScratchDir dir("truncated");
  const WrittenShard w = WriteTwoPieces(dir.path());
  fs::resize_file(w.path, 30);
  ShardFileReader reader;
  absl::Status status = reader.Open(w.path, w.file);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr(w.path));
  EXPECT_THAT(status.message(), HasSubstr("30 bytes"));

  fs::remove(w.path);
  ShardFileReader missing;
  status = missing.Open(w.path, w.file);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr(w.path));
}

TEST(FilesTest, APieceOutsideTheFileIsAnErrorNotARead) {
  ScratchDir dir("outside");
  const WrittenShard w = WriteTwoPieces(dir.path());
  ShardFileReader reader;
  ASSERT_OK(reader.Open(w.path, w.file));
  Piece bad = w.pieces[1];
  bad.set_byte_offset(40);  // 7 values from byte 40 run past the 48-byte file
  std::vector<float> out(7);
  const absl::Status status = reader.ReadPiece(bad, out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr("model.b"));
  EXPECT_THAT(status.message(), HasSubstr(w.path));
}

}  // namespace
}  // namespace moefold::checkpoint
