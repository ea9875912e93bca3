// NumPy legacy RandomState (MT19937 + shuffle) and Megatron's GPT sample order: MT19937 reference
// outputs, shuffles traced by hand from those outputs, and the invariants of the three indices.
#include "core/data/gpt_dataset.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/numpy_random.h"
#include "gmock/gmock.h"
#include "tests/testing/testing.h"

namespace moefold::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The first outputs of MT19937 seeded 5489 (init_genrand); the first is the widely published
// reference value, and std::mt19937's 10000th output is fixed by the C++ standard.
constexpr uint32_t kMt5489[] = {3499211612u, 581869302u,  3890346734u, 3586334585u,
                                545404204u,  4161255391u, 3922919429u, 949333985u};

TEST(NumpyRandomStateTest, Mt19937MatchesReferenceOutputs) {
  NumpyRandomState rng(5489);
  for (uint32_t expected : kMt5489) EXPECT_EQ(rng.NextUint32(), expected);
  std::mt19937 standard(5489);
  standard.discard(9999);
  EXPECT_EQ(standard(), 4123659995u);
}

TEST(NumpyRandomStateTest, NextUint64IsHighThenLow) {
  NumpyRandomState rng(5489);
  EXPECT_EQ(rng.NextUint64(), (uint64_t{kMt5489[0]} << 32) | kMt5489[1]);
}

TEST(NumpyRandomStateTest, RandomIntervalMasksAndRejects) {
  NumpyRandomState rng(5489);
  EXPECT_EQ(rng.RandomInterval(0), 0u);  // draws nothing
  // max 4, mask 7: 3499211612 & 7 = 4 → accepted.
  EXPECT_EQ(rng.RandomInterval(4), 4u);
  // max 4, mask 7: 581869302 & 7 = 6 and 3890346734 & 7 = 6 rejected, 3586334585 & 7 = 1.
  EXPECT_EQ(rng.RandomInterval(4), 1u);
  // max 0x1'0000'0000 takes one 64-bit draw: (545404204 << 32 | 4161255391) & (2^33 − 1).
  const uint64_t draw = (uint64_t{kMt5489[4]} << 32) | kMt5489[5];
  const uint64_t masked = draw & ((uint64_t{1} << 33) - 1);
  ASSERT_LE(masked, uint64_t{1} << 32);  // so this draw is accepted
  EXPECT_EQ(rng.RandomInterval(uint64_t{1} << 32), masked);
}

TEST(NumpyRandomStateTest, ShuffleTracedByHand) {
  // i = 5 (mask 7): 3499211612 & 7 = 4 → swap x5, x4      → 0 1 2 3 5 4
  // i = 4 (mask 7): 6 rejected, 6 rejected, 1 → swap x4, x1 → 0 5 2 3 1 4
  // i = 3 (mask 3): 545404204 & 3 = 0 → swap x3, x0        → 3 5 2 0 1 4
  // i = 2 (mask 3): 4161255391 & 3 = 3 rejected, 3922919429 & 3 = 1 → swap x2, x1 → 3 2 5 0 1 4
  // i = 1 (mask 1): 949333985 & 1 = 1 → no change.
  NumpyRandomState rng(5489);
  std::vector<int64_t> x = {0, 1, 2, 3, 4, 5};
  rng.Shuffle(absl::MakeSpan(x));
  EXPECT_THAT(x, ElementsAre(3, 2, 5, 0, 1, 4));
  // The permutation depends only on n, not on the element type.
  NumpyRandomState rng32(5489);
  std::vector<int32_t> y = {0, 1, 2, 3, 4, 5};
  rng32.Shuffle(absl::MakeSpan(y));
  EXPECT_THAT(y, ElementsAre(3, 2, 5, 0, 1, 4));
}

TEST(NumpyRandomStateTest, MatchesNumpyPermutation) {
  // numpy.random.RandomState(seed).permutation(10) is arange(10) shuffled; these two outputs are
  // quoted in countless NumPy tutorials (np.random.seed(0 or 42); np.random.permutation(10)).
  auto permutation = [](uint32_t seed) {
    NumpyRandomState rng(seed);
    std::vector<int64_t> x(10);
    std::iota(x.begin(), x.end(), 0);
    rng.Shuffle(absl::MakeSpan(x));
    return x;
  };
  EXPECT_THAT(permutation(0), ElementsAre(2, 8, 4, 9, 1, 6, 7, 3, 0, 5));
  EXPECT_THAT(permutation(42), ElementsAre(8, 1, 5, 0, 7, 2, 9, 4, 3, 6));
}

TEST(BuildSampleIndexTest, TracedByHand) {
  // Sizes 5, 3, 4 read in order, seq_len 4: samples take 5 tokens and share one.
  // Sample 0: seq 0 [0, 5) → next starts at (0, 4). Sample 1: seq 0 [4, 5), seq 1, seq 2 [0, 1)
  // → next starts at (2, 0). num_samples = (12 − 1) / 4 = 2.
  const std::vector<int32_t> sizes = {5, 3, 4};
  const std::vector<int32_t> order = {0, 1, 2};
  EXPECT_THAT(BuildSampleIndex(sizes, order, 4, 1, 12), ElementsAre(0, 0, 0, 4, 2, 0));
  // An empty sequence is skipped: sizes 2, 0, 3, seq_len 2, num_samples = (5 − 1) / 2 = 2.
  const std::vector<int32_t> sizes2 = {2, 0, 3};
  EXPECT_THAT(BuildSampleIndex(sizes2, order, 2, 1, 5), ElementsAre(0, 0, 2, 0, 2, 2));
}

class GptDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/moefold_gpt_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  IndexedDataset Write(const std::vector<std::vector<int32_t>>& docs) {
    const std::string prefix = dir_ + "/ds";
    auto w = IndexedDatasetWriter::Create(prefix, IndexDType::kI32);
    MF_CHECK(w.ok()) << w.status();
    for (const auto& d : docs) MF_CHECK(w->AddDocument(d).ok()) << "AddDocument";
    MF_CHECK(w->Finalize().ok()) << "Finalize";
    auto ds = IndexedDataset::Open(prefix);
    MF_CHECK(ds.ok()) << ds.status();
    return std::move(ds).value();
  }

  // Documents of lengths 1..n whose tokens are unique (1000·doc + position).
  IndexedDataset WriteRamp(int n) {
    std::vector<std::vector<int32_t>> docs(n);
    for (int d = 0; d < n; ++d) {
      for (int t = 0; t <= d; ++t) docs[d].push_back(1000 * d + t);
    }
    return Write(docs);
  }

  std::string dir_;
};

// The concatenation of the sequences in document-index order.
std::vector<int32_t> Stream(const IndexedDataset& ds, const GptDataset& gpt) {
  std::vector<int32_t> stream;
  for (int32_t seq : gpt.document_index()) {
    std::vector<int32_t> t(ds.sequence_length(seq));
    ds.GetTokens(seq, 0, static_cast<int64_t>(t.size()), t.data());
    stream.insert(stream.end(), t.begin(), t.end());
  }
  return stream;
}

TEST_F(GptDatasetTest, TracedByHand) {
  // Sequences 0: 10..13, 1: 20..22, 2: 30..34; seed 5489.
  // Document index: shuffle of 3 with draws 3499211612 & 3 = 0 (swap x2, x0), 581869302 & 1 = 0
  // (swap x1, x0) → [1, 2, 0]; stream 20 21 22 30 31 32 33 34 10 11 12 13.
  // seq_len 2: 5 samples s_k = stream[2k, 2k + 3); shuffle of 5 continues the draws:
  // i=4: 6 rejected, 1 → [0 4 2 3 1]; i=3: 0 → [3 4 2 0 1]; i=2: 3 rejected, 1 → [3 2 4 0 1];
  // i=1: 1 → unchanged.
  IndexedDataset ds = Write({{10, 11, 12, 13}, {20, 21, 22}, {30, 31, 32, 33, 34}});
  auto gpt = GptDataset::Build(&ds, 2, 5, 5489);
  ASSERT_OK(gpt);
  EXPECT_EQ(gpt->num_epochs(), 1);
  EXPECT_THAT(gpt->document_index(), ElementsAre(1, 2, 0));
  EXPECT_THAT(gpt->sample_index(), ElementsAre(0, 0, 0, 2, 1, 1, 1, 3, 2, 0, 2, 2));
  EXPECT_THAT(gpt->shuffle_index(), ElementsAre(3, 2, 4, 0, 1));
  const std::vector<std::vector<int32_t>> expected = {
      {33, 34, 10}, {31, 32, 33}, {10, 11, 12}, {20, 21, 22}, {22, 30, 31}};
  ASSERT_EQ(gpt->size(), 5);
  for (int64_t i = 0; i < 5; ++i) {
    std::vector<int32_t> got(3);
    gpt->GetSample(i, got.data());
    EXPECT_EQ(got, expected[i]) << "sample " << i;
  }
}

TEST_F(GptDatasetTest, SamplesAreOverlappingWindowsOfTheShuffledStream) {
  IndexedDataset ds = WriteRamp(12);  // 78 tokens
  const int seq_len = 8;
  auto gpt = GptDataset::Build(&ds, seq_len, 30, 1234);  // 241 tokens → 4 epochs
  ASSERT_OK(gpt);
  EXPECT_EQ(gpt->num_epochs(), 4);
  EXPECT_EQ(gpt->size(), (4 * 78 - 1) / seq_len);
  EXPECT_GE(gpt->size(), 30);
  // Each sequence appears once per epoch.
  std::vector<int> count(12, 0);
  for (int32_t s : gpt->document_index()) ++count[s];
  for (int c : count) EXPECT_EQ(c, 4);
  // The shuffle index is a permutation of [0, size).
  std::vector<int64_t> sorted = gpt->shuffle_index();
  std::sort(sorted.begin(), sorted.end());
  for (int64_t k = 0; k < gpt->size(); ++k) ASSERT_EQ(sorted[k], k);

  const std::vector<int32_t> stream = Stream(ds, *gpt);
  std::vector<int32_t> sample(seq_len + 1);
  for (int64_t i = 0; i < gpt->size(); ++i) {
    gpt->GetSample(i, sample.data());
    const int64_t k = gpt->shuffle_index()[i];
    const std::vector<int32_t> window(stream.begin() + k * seq_len,
                                      stream.begin() + k * seq_len + seq_len + 1);
    ASSERT_EQ(sample, window) << "sample " << i << " (unshuffled " << k << ")";
  }
}

TEST_F(GptDatasetTest, ConsecutiveSamplesShareOneToken) {
  IndexedDataset ds = WriteRamp(9);
  auto gpt = GptDataset::Build(&ds, 5, 0, 7);
  ASSERT_OK(gpt);
  // Invert the shuffle to walk samples in stream order.
  std::vector<int64_t> position(gpt->size());
  for (int64_t i = 0; i < gpt->size(); ++i) position[gpt->shuffle_index()[i]] = i;
  std::vector<int32_t> a(6), b(6);
  for (int64_t k = 0; k + 1 < gpt->size(); ++k) {
    gpt->GetSample(position[k], a.data());
    gpt->GetSample(position[k + 1], b.data());
    EXPECT_EQ(a.back(), b.front()) << "samples " << k << " and " << k + 1;
  }
}

TEST_F(GptDatasetTest, DeterministicPerSeedAndDifferentAcrossSeeds) {
  IndexedDataset ds = WriteRamp(20);
  auto a = GptDataset::Build(&ds, 6, 40, 99);
  auto b = GptDataset::Build(&ds, 6, 40, 99);
  auto c = GptDataset::Build(&ds, 6, 40, 100);
  ASSERT_OK(a);
  ASSERT_OK(b);
  ASSERT_OK(c);
  EXPECT_EQ(a->document_index(), b->document_index());
  EXPECT_EQ(a->sample_index(), b->sample_index());
  EXPECT_EQ(a->shuffle_index(), b->shuffle_index());
  EXPECT_NE(a->document_index(), c->document_index());
  EXPECT_NE(a->shuffle_index(), c->shuffle_index());
}

TEST_F(GptDatasetTest, SeparatesASmallFinalEpoch) {
  IndexedDataset ds = WriteRamp(12);  // T = 78, seq_len 7: 11 samples per epoch
  // 12 samples need 85 tokens → 2 epochs; the first holds (78 − 1) / 7 = 11 samples, so the final
  // epoch contributes 1 < int(0.8 · 11) = 8: Megatron shuffles it separately.
  auto gpt = GptDataset::Build(&ds, 7, 12, 3);
  ASSERT_OK(gpt);
  EXPECT_EQ(gpt->num_epochs(), 2);
  EXPECT_TRUE(gpt->separate_final_epoch());
  // Each half of the document index holds every sequence exactly once.
  for (int half = 0; half < 2; ++half) {
    std::vector<int32_t> part(gpt->document_index().begin() + 12 * half,
                              gpt->document_index().begin() + 12 * (half + 1));
    std::sort(part.begin(), part.end());
    for (int s = 0; s < 12; ++s) EXPECT_EQ(part[s], s);
  }
  // The shuffle keeps the first 11 samples among themselves and the rest after them.
  ASSERT_EQ(gpt->size(), (2 * 78 - 1) / 7);
  for (int64_t i = 0; i < gpt->size(); ++i) {
    EXPECT_EQ(gpt->shuffle_index()[i] < 11, i < 11) << i;
  }
  // Asking for most of the second epoch shuffles both epochs together.
  auto joint = GptDataset::Build(&ds, 7, 20, 3);
  ASSERT_OK(joint);
  EXPECT_FALSE(joint->separate_final_epoch());
}

TEST_F(GptDatasetTest, RejectsBadArguments) {
  IndexedDataset ds = Write({{1, 2, 3}});
  EXPECT_THAT(std::string(GptDataset::Build(&ds, 1, 1, 0).status().message()),
              HasSubstr("seq_len must be ≥ 2"));
  EXPECT_THAT(std::string(GptDataset::Build(&ds, 2, 1, uint64_t{1} << 32).status().message()),
              HasSubstr("seed 4294967296 out of NumPy's range"));
  const absl::Status small = GptDataset::Build(&ds, 3, 1, 0).status();
  EXPECT_EQ(small.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(small.message()), HasSubstr("3 tokens cannot fill one sample of 4"));
  EXPECT_OK(GptDataset::Build(&ds, 2, 1, 0).status());
}

TEST(GlobalBatchSampleIdsTest, ConsecutiveStepsTileTheDatasetAndWrap) {
  EXPECT_THAT(GlobalBatchSampleIds(0, 4, 10), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(GlobalBatchSampleIds(1, 4, 10), ElementsAre(4, 5, 6, 7));
  EXPECT_THAT(GlobalBatchSampleIds(2, 4, 10), ElementsAre(8, 9, 0, 1));
  EXPECT_THAT(GlobalBatchSampleIds(int64_t{1} << 61, 8, 10),
              ElementsAre(6, 7, 8, 9, 0, 1, 2, 3));  // 2^64 mod 10 = 6
}

}  // namespace
}  // namespace moefold::data
