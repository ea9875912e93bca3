// Fuzzes checkpoints: a valid two-rank checkpoint whose manifest (its bytes, or one field set to
// an extreme value) or a shard file is mutated goes through CheckpointReader::Open and the reads a
// resuming rank makes; every input must end in the values or an error naming the file, tensor or
// field — no crash, hang or sanitizer report.
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/directory.h"
#include "checkpoint/files.h"
#include "checkpoint/reader.h"
#include "gtest/gtest.h"
#include "tests/fuzz/fuzz_testing.h"
#include "tests/fuzz/mutator.h"

namespace moefold::fuzz {
namespace {
namespace fs = std::filesystem;
using checkpoint::BoxRange;
using checkpoint::Manifest;
using checkpoint::Piece;

constexpr int64_t kRows = 4, kCols = 6;

BoxRange Rows(int64_t first, int64_t count) {
  BoxRange b{.offset = {first, 0}, .shape = {count, kCols}};
  b.flat_begin = 0;
  b.flat_end = count * kCols;
  return b;
}

// Two ranks, each holding half the rows of "w" (param and exp_avg).
absl::Status WriteSeed(const std::string& dir) {
  fs::create_directories(dir);
  Manifest m;
  m.set_format_version(checkpoint::kFormatVersion);
  m.set_step(6);
  checkpoint::TensorInfo* info = m.add_tensors();
  info->set_name("w");
  info->add_global_shape(kRows);
  info->add_global_shape(kCols);
  for (int rank : {0, 1}) {
    checkpoint::ShardFileWriter writer;
    MF_RETURN_IF_ERROR(writer.Open(dir + "/" + checkpoint::ShardName(rank)));
    for (const char* kind : {"param", "exp_avg"}) {
      const BoxRange box = Rows(2 * rank, 2);
      std::vector<float> v(box.flat_end);
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(100 * rank + i);
      Piece* p = m.add_pieces();
      p->set_tensor("w");
      p->set_kind(kind);
      p->set_rank(rank);
      for (int64_t o : box.offset) p->add_box_offset(o);
      for (int64_t n : box.shape) p->add_box_shape(n);
      p->set_flat_begin(box.flat_begin);
      p->set_flat_end(box.flat_end);
      int64_t offset = 0;
      uint64_t hash = 0;
      MF_RETURN_IF_ERROR(writer.Append(v.data(), v.size() * sizeof(float), &offset, &hash));
      p->set_byte_offset(offset);
      p->set_xxh3(hash);
    }
    MF_ASSIGN_OR_RETURN(checkpoint::ShardFile file, writer.Finish());
    file.set_rank(rank);
    *m.add_files() = file;
  }
  return checkpoint::WriteManifest(dir, m);
}

// What a resuming rank does: open, then read the slices its layout holds (boxes of its own).
absl::Status Consume(const std::string& dir) {
  auto reader = checkpoint::CheckpointReader::Open(dir);
  if (!reader.ok()) return reader.status();
  for (const char* kind : {"param", "exp_avg"}) {
    for (const BoxRange& box : {Rows(0, kRows), Rows(1, 2), Rows(3, 1)}) {
      std::vector<float> out(box.flat_end - box.flat_begin);
      MF_RETURN_IF_ERROR((*reader)->Read("w", kind, box, out.data()));
    }
  }
  return absl::OkStatus();
}

// One field of the manifest set to an extreme value.
void MutateField(Mutator& m, Manifest* manifest) {
  static const std::vector<int64_t> kValues = {
      -1, 0, 1, 3, 7, 1 << 20, int64_t{1} << 40, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN};
  const int64_t v = m.Pick(kValues);
  Piece* p = manifest->mutable_pieces(static_cast<int>(m.Below(manifest->pieces_size())));
  switch (m.Below(9)) {
    case 0: p->set_byte_offset(v); break;
    case 1: p->set_box_offset(static_cast<int>(m.Below(2)), v); break;
    case 2: p->set_box_shape(static_cast<int>(m.Below(2)), v); break;
    case 3: p->set_flat_begin(v); break;
    case 4: p->set_flat_end(v); break;
    case 5: p->set_rank(static_cast<int32_t>(v)); break;
    case 6: manifest->mutable_tensors(0)->set_global_shape(static_cast<int>(m.Below(2)), v); break;
    case 7: manifest->mutable_files(static_cast<int>(m.Below(2)))->set_bytes(v); break;
    default:
      if (m.Below(2)) {
        p->add_box_shape(v);
      } else {
        manifest->mutable_files(static_cast<int>(m.Below(2)))->set_name(m.Below(2) ? "../x" : "");
      }
      break;
  }
}

TEST(CheckpointFuzzTest, MutatedManifestsAndShardsEndInValuesOrAClearError) {
  const std::string root = ScratchDir("checkpoint");
  const std::string seed = root + "/seed", dir = root + "/fuzz";
  ASSERT_TRUE(WriteSeed(seed).ok());
  ASSERT_TRUE(Consume(seed).ok()) << Consume(seed);
  auto seed_manifest = checkpoint::ReadManifest(seed);
  ASSERT_TRUE(seed_manifest.ok());
  const std::string manifest_bytes = ReadFile(seed + "/" + checkpoint::kManifestName);
  const std::string shards[2] = {ReadFile(seed + "/" + checkpoint::ShardName(0)),
                                 ReadFile(seed + "/" + checkpoint::ShardName(1))};
  fs::create_directories(dir);
  Mutator mutator(/*seed=*/37);
  Tally tally;
  for (int i = 0; i < Iterations(); ++i) {
    std::string manifest = manifest_bytes, shard0 = shards[0], shard1 = shards[1];
    switch (mutator.Below(4)) {
      case 0:
      case 1: {
        Manifest m = *seed_manifest;
        for (uint64_t k = 1 + mutator.Below(2); k > 0; --k) MutateField(mutator, &m);
        manifest = m.SerializeAsString();
        break;
      }
      case 2: manifest = mutator.Mutate(manifest); break;
      default: (mutator.Below(2) ? shard0 : shard1) = mutator.Mutate(shards[0]); break;
    }
    WriteFile(dir + "/" + checkpoint::kManifestName, manifest);
    WriteFile(dir + "/" + checkpoint::ShardName(0), shard0);
    WriteFile(dir + "/" + checkpoint::ShardName(1), shard1);
    tally.Count(Consume(dir));
  }
  tally.Print("checkpoint manifest/shards");
  EXPECT_EQ(tally.silent_errors, 0);
  EXPECT_GT(tally.refused, 0);
  fs::remove_all(root);
}

}  // namespace
}  // namespace moefold::fuzz
