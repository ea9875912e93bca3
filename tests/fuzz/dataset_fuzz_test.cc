// Fuzzes Megatron indexed datasets (.idx/.bin): mutated copies of a valid dataset go through Open,
// ValidateTokens, the GPT sample index and every sample read, as the trainer does; every input
// must end in samples or an error that names the problem — no crash, hang or sanitizer report.
#include <string>
#include <vector>

#include "core/data/gpt_dataset.h"
#include "core/data/indexed_dataset.h"
#include "gtest/gtest.h"
#include "tests/fuzz/fuzz_testing.h"
#include "tests/fuzz/mutator.h"

namespace moefold::fuzz {
namespace {

constexpr int64_t kVocab = 256;

absl::Status Consume(const std::string& prefix) {
  auto dataset = data::IndexedDataset::Open(prefix);
  if (!dataset.ok()) return dataset.status();
  absl::Status s = dataset->ValidateTokens(kVocab);
  if (!s.ok()) return s;
  for (int seq_len : {4, 16}) {
    auto samples = data::GptDataset::Build(&*dataset, seq_len, /*num_samples_needed=*/8,
                                           /*seed=*/1);
    if (!samples.ok()) return samples.status();
    std::vector<int32_t> tokens(seq_len + 1);
    for (int64_t i = 0; i < samples->size(); ++i) samples->GetSample(i, tokens.data());
  }
  return absl::OkStatus();
}

TEST(DatasetFuzzTest, MutatedIdxAndBinEndInSamplesOrAClearError) {
  const std::string dir = ScratchDir("dataset");
  // Seeds: the same documents as uint16 and int32 tokens.
  std::vector<std::pair<std::string, std::string>> seeds;  // (.idx bytes, .bin bytes)
  for (data::IndexDType dtype : {data::IndexDType::kU16, data::IndexDType::kI32}) {
    const std::string prefix = dir + "/seed" + std::to_string(static_cast<int>(dtype));
    auto writer = data::IndexedDatasetWriter::Create(prefix, dtype);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int doc = 0; doc < 6; ++doc) {
      std::vector<int32_t> tokens;
      for (int t = 0; t < 5 + 7 * doc; ++t) tokens.push_back((doc * 31 + t * 7) % kVocab);
      ASSERT_TRUE(writer->AddDocument(tokens).ok());
    }
    ASSERT_TRUE(writer->Finalize().ok());
    ASSERT_TRUE(Consume(prefix).ok());
    seeds.emplace_back(ReadFile(prefix + ".idx"), ReadFile(prefix + ".bin"));
  }
  const std::string prefix = dir + "/fuzz";
  Mutator mutator(/*seed=*/29);
  Tally tally;
  for (int i = 0; i < Iterations(); ++i) {
    auto [idx, bin] = mutator.Pick(seeds);
    switch (mutator.Below(3)) {
      case 0: idx = mutator.Mutate(idx); break;
      case 1: bin = mutator.Mutate(bin); break;
      default: idx = mutator.Mutate(idx); bin = mutator.Mutate(bin); break;
    }
    WriteFile(prefix + ".idx", idx);
    WriteFile(prefix + ".bin", bin);
    tally.Count(Consume(prefix));
  }
  tally.Print("dataset .idx/.bin");
  EXPECT_EQ(tally.silent_errors, 0);
  EXPECT_GT(tally.refused, 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace moefold::fuzz
