// CheckpointReader on a hand-made two-rank checkpoint: a rank's slices are gathered from whichever
// shards hold them (any box, any flat range, one rank's pieces only when asked), and bad input is an
// error that names what is wrong — the tensor when an element is held by nobody or its shape
// differs, the file when a shard is corrupted, truncated or missing, the manifest when it is.
#include "checkpoint/reader.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/directory.h"
#include "checkpoint/files.h"
#include "gmock/gmock.h"
#include "tests/checkpoint/scratch_dir.h"
#include "tests/testing/testing.h"

namespace moefold::checkpoint {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int64_t kRows = 4, kCols = 6;

// The global (4, 6) tensors' values: w(r, c) = 10·r + c, and `gap` the same plus 100.
float W(int64_t r, int64_t c) { return static_cast<float>(10 * r + c); }

struct PieceSpec {
  int rank;
  std::string tensor, kind;
  BoxRange box;
  float add = 0;  // added to W (tells tensors apart)
};

BoxRange Rows(int64_t first, int64_t count, int64_t flat_begin = -1, int64_t flat_end = -1) {
  BoxRange b{.offset = {first, 0}, .shape = {count, kCols}};
  b.flat_begin = flat_begin < 0 ? 0 : flat_begin;
  b.flat_end = flat_end < 0 ? count * kCols : flat_end;
  return b;
}

std::vector<float> ValuesOf(const BoxRange& box, float add) {
  std::vector<float> v;
  for (int64_t f = box.flat_begin; f < box.flat_end; ++f) {
    v.push_back(W(box.offset[0] + f / box.shape[1], box.offset[1] + f % box.shape[1]) + add);
  }
  return v;
}

// Writes rank-0000R.bin for each rank and the manifest, as the trainer does.
void WriteCheckpoint(const std::string& dir, const std::vector<PieceSpec>& specs) {
  fs::create_directories(dir);
  Manifest m;
  m.set_format_version(kFormatVersion);
  m.set_step(6);
  std::map<std::string, bool> seen;
  for (const PieceSpec& s : specs) {
    if (seen[s.tensor]) continue;
    seen[s.tensor] = true;
    TensorInfo* info = m.add_tensors();
    info->set_name(s.tensor);
    info->add_global_shape(kRows);
    info->add_global_shape(kCols);
  }
  for (int rank : {0, 1}) {
    ShardFileWriter writer;
    ASSERT_OK(writer.Open(dir + "/" + ShardName(rank)));
    for (const PieceSpec& s : specs) {
      if (s.rank != rank) continue;
      const std::vector<float> v = ValuesOf(s.box, s.add);
      Piece* p = m.add_pieces();
      p->set_tensor(s.tensor);
      p->set_kind(s.kind);
      p->set_rank(rank);
      for (int64_t o : s.box.offset) p->add_box_offset(o);
      for (int64_t n : s.box.shape) p->add_box_shape(n);
      p->set_flat_begin(s.box.flat_begin);
      p->set_flat_end(s.box.flat_end);
      int64_t offset = 0;
      uint64_t hash = 0;
      ASSERT_OK(writer.Append(v.data(), v.size() * sizeof(float), &offset, &hash));
      p->set_byte_offset(offset);
      p->set_xxh3(hash);
    }
    auto file = writer.Finish();
    ASSERT_OK(file);
    file->set_rank(rank);
    *m.add_files() = *file;
  }
  ASSERT_OK(WriteManifest(dir, m));
}

// `w`: TP row halves (rank 0 rows 0-1, rank 1 rows 2-3), its exp_avg cut by ZeRO-1 into flat
// ranges that end inside rows; `gap`: only rows 0-1 were saved.
std::vector<PieceSpec> TwoRankSpecs() {
  return {
      {0, "model.w", "param", Rows(0, 2)},
      {1, "model.w", "param", Rows(2, 2)},
      {0, "model.w", "exp_avg", Rows(0, 2, 0, 5), 0.5f},
      {1, "model.w", "exp_avg", Rows(0, 2, 5, 12), 0.5f},
      {0, "model.w", "exp_avg", Rows(2, 2, 0, 9), 0.5f},
      {1, "model.w", "exp_avg", Rows(2, 2, 9, 12), 0.5f},
      {0, "model.gap", "param", Rows(0, 2), 100},
  };
}

class ReaderTest : public ::testing::Test {
 protected:
  void SetUp() override { WriteCheckpoint(dir_.path(), TwoRankSpecs()); }
  std::unique_ptr<CheckpointReader> Open() {
    auto reader = CheckpointReader::Open(dir_.path());
    EXPECT_OK(reader);
    return reader.ok() ? std::move(*reader) : nullptr;
  }
  std::string Shard(int rank) const { return dir_.path() + "/" + ShardName(rank); }

  ScratchDir dir_{"reader"};
  const std::vector<int64_t> shape_{kRows, kCols};
};

TEST_F(ReaderTest, GathersAnyBoxFromWhicheverShardsHoldIt) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->manifest().step(), 6);
  EXPECT_TRUE(reader->Has("model.w", "exp_avg"));
  EXPECT_FALSE(reader->Has("model.w", "exp_avg_sq"));
  ASSERT_NE(reader->FindTensor("model.w"), nullptr);
  EXPECT_EQ(reader->FindTensor("model.nothing"), nullptr);
  // The whole tensor, column halves (a layout change), and a flat range cutting rows.
  std::vector<BoxRange> wanted = {Rows(0, 4), Rows(1, 2, 3, 10)};
  for (int64_t half = 0; half < 2; ++half) {
    wanted.push_back(BoxRange{.offset = {0, 3 * half}, .shape = {kRows, 3}, .flat_begin = 0,
                              .flat_end = 12});
  }
  for (const BoxRange& box : wanted) {
    for (const auto& [kind, add] : {std::pair<std::string, float>{"param", 0.0f},
                                    {"exp_avg", 0.5f}}) {
      std::vector<float> out(box.flat_end - box.flat_begin, -1);
      ASSERT_OK(reader->Read("model.w", kind, box, out.data(), &shape_));
      std::vector<float> want;
      for (int64_t f = box.flat_begin; f < box.flat_end; ++f) {
        want.push_back(W(box.offset[0] + f / box.shape[1], box.offset[1] + f % box.shape[1]) + add);
      }
      EXPECT_EQ(out, want) << kind << " " << BoxString(box);
    }
  }
}

TEST_F(ReaderTest, OneRanksPiecesOnlyWhenAsked) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  std::vector<float> out(12);
  ASSERT_OK(reader->Read("model.w", "param", Rows(2, 2), out.data(), nullptr, /*rank=*/1));
  EXPECT_EQ(out, ValuesOf(Rows(2, 2), 0));
  const absl::Status status =
      reader->Read("model.w", "param", Rows(0, 2), out.data(), nullptr, /*rank=*/1);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr("model.w"));
}

TEST_F(ReaderTest, AnElementNobodyHoldsIsAnErrorNamingTheTensor) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  std::vector<float> out(24);
  ASSERT_OK(reader->Read("model.gap", "param", Rows(0, 2), out.data(), &shape_));
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + 12), ValuesOf(Rows(0, 2), 100));
  const absl::Status status = reader->Read("model.gap", "param", Rows(0, 4), out.data(), &shape_);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr("tensor model.gap"));
  EXPECT_THAT(status.message(), HasSubstr("element 12 "));  // the first of row 2
}

TEST_F(ReaderTest, AShapeMismatchNamesTheTensorAndBothShapes) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  const std::vector<int64_t> wider = {kRows, 8};
  std::vector<float> out(32);
  const absl::Status status = reader->Read("model.w", "param", Rows(0, 4), out.data(), &wider);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("model.w"));
  EXPECT_THAT(status.message(), HasSubstr("(4, 6)"));
  EXPECT_THAT(status.message(), HasSubstr("(4, 8)"));
}

TEST_F(ReaderTest, AMissingTensorOrKindIsNamed) {
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  std::vector<float> out(24);
  absl::Status status = reader->Read("model.v", "param", Rows(0, 4), out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr("model.v"));
  status = reader->Read("model.gap", "exp_avg", Rows(0, 4), out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr("exp_avg of tensor model.gap"));
}

TEST_F(ReaderTest, ACorruptedShardNamesTheFileAndTheTensor) {
  {
    std::fstream f(Shard(1), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);  // inside rank 1's first piece, the param of rows 2-3
    f.put('\x7f');
  }
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  std::vector<float> out(24);
  ASSERT_OK(reader->Read("model.w", "param", Rows(0, 2), out.data()));  // rank 0's piece only
  const absl::Status status = reader->Read("model.w", "param", Rows(0, 4), out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr(Shard(1)));
  EXPECT_THAT(status.message(), HasSubstr("model.w"));
}

TEST_F(ReaderTest, ATruncatedOrMissingShardNamesTheFile) {
  fs::resize_file(Shard(1), 8);
  auto reader = Open();
  ASSERT_NE(reader, nullptr);
  std::vector<float> out(24);
  absl::Status status = reader->Read("model.w", "param", Rows(0, 4), out.data());
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr(Shard(1)));

  fs::remove(Shard(1));
  reader = Open();
  ASSERT_NE(reader, nullptr);
  status = reader->Read("model.w", "param", Rows(0, 4), out.data());
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr(Shard(1)));
}

TEST_F(ReaderTest, AMissingOrDamagedManifestNamesIt) {
  const std::string manifest = dir_.path() + "/" + kManifestName;
  ASSERT_OK(WriteFileAtomically(manifest, "\xff\xff\xff not a manifest"));
  absl::Status status = CheckpointReader::Open(dir_.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr(manifest));

  Manifest future;
  future.set_format_version(kFormatVersion + 1);
  ASSERT_OK(WriteFileAtomically(manifest, future.SerializeAsString()));
  status = CheckpointReader::Open(dir_.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr(manifest));

  fs::remove(manifest);
  status = CheckpointReader::Open(dir_.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_THAT(status.message(), HasSubstr(manifest));
}

TEST_F(ReaderTest, APieceOfARankWithoutAFileIsRefusedOnOpen) {
  auto manifest = ReadManifest(dir_.path());
  ASSERT_OK(manifest);
  manifest->mutable_pieces(0)->set_rank(7);
  ASSERT_OK(WriteManifest(dir_.path(), *manifest));
  const absl::Status status = CheckpointReader::Open(dir_.path()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(status.message(), HasSubstr("model.w"));
}

}  // namespace
}  // namespace moefold::checkpoint
