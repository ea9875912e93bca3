// Fuzzes safetensors files (the header above all: its length, JSON, dtypes, shapes and offsets):
// mutated copies of valid files go through Open and every tensor's Read; every input must end in
// tensors or an error naming the file — no crash, hang or sanitizer report.
#include <string>
#include <vector>

#include "core/hf/safetensors.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "tests/fuzz/fuzz_testing.h"
#include "tests/fuzz/mutator.h"

namespace moefold::fuzz {
namespace {

absl::Status Consume(const std::string& path) {
  auto file = hf::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  for (const auto& [name, entry] : file->entries()) {
    auto tensor = file->Read(name);
    if (!tensor.ok()) return tensor.status();
  }
  return absl::OkStatus();
}

TEST(SafetensorsFuzzTest, MutatedFilesEndInTensorsOrAClearError) {
  const std::string dir = ScratchDir("safetensors");
  std::vector<std::string> seeds;
  {
    const std::string path = dir + "/seed.safetensors";
    Tensor a = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor b = Tensor::FromVector({0.5f, -1}, {2}).To(DType::kBF16);
    Tensor c = Tensor::FromVectorI32({7, 8, 9}, {3});
    ASSERT_TRUE(hf::WriteSafetensors(path, {{"model.embed.weight", a}, {"norm", b}, {"ids", c}},
                                     {{"format", "pt"}})
                    .ok());
    ASSERT_TRUE(Consume(path).ok());
    seeds.push_back(ReadFile(path));
  }
  const std::string path = dir + "/fuzz.safetensors";
  Mutator mutator(/*seed=*/31);
  Tally tally;
  for (int i = 0; i < Iterations(); ++i) {
    std::string bytes = mutator.Pick(seeds);
    // Mostly the header (8-byte length + JSON), where the parsing is.
    if (mutator.Below(4) != 0 && bytes.size() > 8) {
      uint64_t header_len = 0;
      for (int b = 0; b < 8; ++b) header_len |= uint64_t{static_cast<uint8_t>(bytes[b])} << (8 * b);
      const std::string header = bytes.substr(8, header_len);
      const std::string rest = bytes.substr(std::min<size_t>(bytes.size(), 8 + header_len));
      std::string mutated = mutator.Mutate(header);
      const uint64_t len = mutator.Below(8) == 0 ? header_len : mutated.size();
      std::string out(8, '\0');
      for (int b = 0; b < 8; ++b) out[b] = static_cast<char>(len >> (8 * b));
      bytes = out + mutated + rest;
    } else {
      bytes = mutator.Mutate(bytes);
    }
    WriteFile(path, bytes);
    tally.Count(Consume(path));
  }
  tally.Print("safetensors");
  EXPECT_EQ(tally.silent_errors, 0);
  EXPECT_GT(tally.refused, 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moefold::fuzz
