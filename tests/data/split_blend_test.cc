// Megatron's --split and --data-path blends: split strings, sequence ranges (round half to even),
// split GPT indices over a range of sequence ids, the greedy blending indices and the per-dataset
// sample counts, each traced by hand (MT19937 seed 5489 outputs as in gpt_dataset_test.cc).
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/data/blend.h"
#include "core/data/gpt_dataset.h"
#include "core/data/split.h"
#include "core/data/training_data.h"
#include "gmock/gmock.h"
#include "tests/testing/testing.h"

namespace moefold::data {
namespace {

using ::testing::DoubleEq;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseSplitTest, NormalisesShares) {
  auto s = ParseSplit("969,30,1");
  ASSERT_OK(s);
  EXPECT_THAT(*s, ElementsAre(DoubleEq(0.969), DoubleEq(0.03), DoubleEq(0.001)));
  s = ParseSplit("98, 2");  // a missing test share is 0
  ASSERT_OK(s);
  EXPECT_THAT(*s, ElementsAre(DoubleEq(0.98), DoubleEq(0.02), DoubleEq(0.0)));
  s = ParseSplit("");
  ASSERT_OK(s);
  EXPECT_THAT(*s, ElementsAre(1.0, 0.0, 0.0));
  s = ParseSplit("99/1/0");
  ASSERT_OK(s);
  EXPECT_THAT(*s, ElementsAre(DoubleEq(0.99), DoubleEq(0.01), 0.0));
}

TEST(ParseSplitTest, RejectsBadSplits) {
  struct Case {
    const char* split;
    const char* message;
  };
  for (const Case& c : {Case{"0,90,10", "the train share is 0"}, Case{"0,0,0", "sum to 0"},
                        Case{"90,x,10", "\"x\" is not a number"},
                        Case{"90,-1,11", "negative"}, Case{"1,1,1,1", "more than three"}}) {
    auto s = ParseSplit(c.split);
    ASSERT_FALSE(s.ok()) << c.split;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.status().message(), HasSubstr(c.message)) << c.split;
    EXPECT_THAT(s.status().message(), HasSubstr("data.split")) << c.split;
  }
}

TEST(SplitRangesTest, TracedByHand) {
  // 969,30,1 of 1000: book-ends 0, .969, .999, 1 → [0, 969), [969, 999), [999, 1000).
  auto r = SplitRanges(*ParseSplit("969,30,1"), 1000);
  ASSERT_TRUE(r[0] && r[1] && r[2]);
  EXPECT_EQ(r[0]->begin, 0);
  EXPECT_EQ(r[0]->end, 969);
  EXPECT_EQ(r[1]->begin, 969);
  EXPECT_EQ(r[1]->end, 999);
  EXPECT_EQ(r[2]->begin, 999);
  EXPECT_EQ(r[2]->end, 1000);
  // 1,1 of 5: 0.5 · 5 = 2.5 rounds half to even (Python's round) → 2, not 3.
  r = SplitRanges(*ParseSplit("1,1"), 5);
  ASSERT_TRUE(r[0] && r[1]);
  EXPECT_FALSE(r[2]);  // a zero share: no test split at all
  EXPECT_EQ(r[0]->end, 2);
  EXPECT_EQ(r[1]->begin, 2);
  EXPECT_EQ(r[1]->end, 5);
  // 0.5 · 7 = 3.5 → 4 (even).
  r = SplitRanges(*ParseSplit("1,1"), 7);
  EXPECT_EQ(r[0]->end, 4);
  // A zero validation share between two others: absent, and test follows train directly.
  r = SplitRanges(*ParseSplit("2,0,1"), 3);
  ASSERT_TRUE(r[0] && r[2]);
  EXPECT_FALSE(r[1]);
  EXPECT_EQ(r[0]->end, 2);
  EXPECT_EQ(r[2]->begin, 2);
  EXPECT_EQ(r[2]->end, 3);
}

TEST(ParseBlendTest, WeightsAndPrefixes) {
  auto b = ParseBlend({"0.3", "data/a", "0.7", "data/b"});
  ASSERT_OK(b);
  EXPECT_THAT(b->prefixes, ElementsAre("data/a", "data/b"));
  EXPECT_THAT(b->weights, ElementsAre(0.3, 0.7));
  b = ParseBlend({"data/a"});
  ASSERT_OK(b);
  EXPECT_TRUE(b->weights.empty());
  b = ParseBlend({"data/a", "data/b"});  // even length without numbers: prefixes only
  ASSERT_OK(b);
  EXPECT_THAT(b->prefixes, ElementsAre("data/a", "data/b"));
  EXPECT_TRUE(b->weights.empty());
}

TEST(ParseBlendTest, RejectsBadWeights) {
  auto b = ParseBlend({"0", "data/a", "0", "data/b"});
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("the weights sum to 0, not a positive number"));
  b = ParseBlend({"1", "data/a", "-0.5", "data/b"});
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("weight -0.5 of data/b must be positive"));
  b = ParseBlend({"1", "data/a", "x", "data/b"});
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("data.paths[2] = \"x\" is not a weight"));
  EXPECT_FALSE(ParseBlend({}).ok());
}

TEST(BlendTest, SamplesPerDatasetRoundUp) {
  // Weights 1:2 of 10 samples: ceil(10/3) = 4 and ceil(20/3) = 7 are drawn (11 in all); built
  // with the 0.5 % surplus: ceil(4.02) = 5 and ceil(7.035) = 8.
  const std::vector<double> w = NormalizeWeights({1, 2});
  EXPECT_THAT(SamplesPerDataset(w, 10, 0.0), ElementsAre(4, 7));
  EXPECT_THAT(SamplesPerDataset(w, 10, kMidLevelSurplus), ElementsAre(5, 8));
}

TEST(BlendTest, GreedyIndicesTracedByHand) {
  // w = (1/3, 2/3), x = max(i, 1); error_d = w_d·x − taken_d, the largest goes (ties: first).
  //  i x  errors (0 | 1)   pick  taken
  //  0 1  .33 | .67        1     0,1
  //  1 1  .33 | −.33       0     1,1
  //  2 2  −.33 | .33       1     1,2
  //  3 3  0 | 0 (tie)      0     2,2
  //  4 4  −.67 | .67       1     2,3
  //  5 5  −.33 | .33       1     2,4
  //  6 6  0 | 0 (tie)      0     3,4
  //  7 7  −.67 | .67       1     3,5
  //  8 8  −.33 | .33       1     3,6
  //  9 9  0 | 0 (tie)      0     4,6
  // 10 10 −.67 | .67       1     4,7
  // (Megatron's helpers_cpp.build_blending_indices returns the same two arrays.)
  const BlendIndices b = BuildBlendingIndices(NormalizeWeights(NormalizeWeights({1, 2})), 11);
  EXPECT_THAT(b.dataset_index, ElementsAre(1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1));
  EXPECT_THAT(b.dataset_sample_index, ElementsAre(0, 0, 1, 1, 2, 3, 2, 4, 5, 3, 6));
}

TEST(BlendTest, ThreeWayRealisedSharesTrackWeights) {
  const std::vector<double> w = NormalizeWeights({0.2, 0.3, 0.5});
  const BlendIndices b = BuildBlendingIndices(w, 1000);
  std::vector<int64_t> taken(3, 0);
  for (int64_t i = 0; i < 1000; ++i) {
    const int d = b.dataset_index[i];
    ASSERT_EQ(b.dataset_sample_index[i], taken[d]) << i;  // each dataset read in order
    ++taken[d];
    // The greedy rule keeps every realised count within one sample of its target.
    for (int k = 0; k < 3; ++k) {
      ASSERT_NEAR(static_cast<double>(taken[k]), w[k] * (i + 1), 1.0) << i << " " << k;
    }
  }
  EXPECT_THAT(taken, ElementsAre(200, 300, 500));
}

class TrainingDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/moefold_split_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::vector<std::vector<int32_t>>& docs) {
    const std::string prefix = dir_ + "/" + name;
    auto w = IndexedDatasetWriter::Create(prefix, IndexDType::kI32);
    MF_CHECK(w.ok()) << w.status();
    for (const auto& d : docs) MF_CHECK(w->AddDocument(d).ok()) << "AddDocument";
    MF_CHECK(w->Finalize().ok()) << "Finalize";
    return prefix;
  }
  // Sequences 0: 10..13, 1: 20..22, 2: 30..34, 3: 40 41, 4: 50..52.
  std::string WriteFive() {
    return Write("five", {{10, 11, 12, 13}, {20, 21, 22}, {30, 31, 32, 33, 34}, {40, 41},
                          {50, 51, 52}});
  }
  static std::vector<std::vector<int32_t>> Samples(const SampleSource& source, int seq_len) {
    std::vector<std::vector<int32_t>> out;
    for (int64_t i = 0; i < source.size(); ++i) {
      std::vector<int32_t> t(seq_len + 1);
      source.GetSample(i, t.data());
      out.push_back(t);
    }
    return out;
  }

  std::string dir_;
};

TEST_F(TrainingDataTest, SplitsTracedByHand) {
  // Split "2,3" of 5 sequences: book-ends 0, .4, 1 → train [0, 2), valid [2, 5), no test.
  TrainingDataOptions o;
  o.paths = {WriteFive()};
  o.split = "2,3";
  o.seq_len = 2;
  o.seed = 5489;
  o.num_samples = {3, 4, 2};
  auto data = TrainingData::Open(o);
  ASSERT_OK(data);
  EXPECT_EQ((*data)->split(SplitKind::kTest), nullptr);
  // Train: ids 0, 1 (7 tokens, 3 samples, 1 epoch). Document shuffle of 2: draw 3499211612 & 1 =
  // 0 → [1, 0]; stream 20 21 22 10 11 12 13 → s0 = 20 21 22, s1 = 22 10 11, s2 = 11 12 13.
  // Shuffle of 3: 581869302 & 3 = 2 (i = 2, no change), 3890346734 & 1 = 0 (swap) → [1, 0, 2].
  const SampleSource* train = (*data)->split(SplitKind::kTrain);
  ASSERT_NE(train, nullptr);
  EXPECT_FALSE(train->blended());
  EXPECT_THAT(train->parts()[0]->document_index(), ElementsAre(1, 0));
  EXPECT_THAT(train->parts()[0]->shuffle_index(), ElementsAre(1, 0, 2));
  EXPECT_THAT(Samples(*train, 2), ElementsAre(ElementsAre(22, 10, 11), ElementsAre(20, 21, 22),
                                              ElementsAre(11, 12, 13)));
  // Valid: ids 2, 3, 4 (10 tokens, 4 samples, 1 epoch), a fresh RandomState(5489): the shuffle of
  // 3 permutes positions as [1, 2, 0] (gpt_dataset_test) → ids [3, 4, 2]; stream 40 41 50 51 52
  // 30 31 32 33 34 → s0 = 40 41 50, s1 = 50 51 52, s2 = 52 30 31, s3 = 31 32 33. Shuffle of 4:
  // 3890346734 & 3 = 2 (swap x3, x2) → 0 1 3 2; 3586334585 & 3 = 1 (swap x2, x1) → 0 3 1 2;
  // 545404204 & 1 = 0 (swap x1, x0) → 3 0 1 2.
  const SampleSource* valid = (*data)->split(SplitKind::kValid);
  ASSERT_NE(valid, nullptr);
  EXPECT_THAT(valid->parts()[0]->document_index(), ElementsAre(3, 4, 2));
  EXPECT_THAT(valid->parts()[0]->shuffle_index(), ElementsAre(3, 0, 1, 2));
  EXPECT_THAT(Samples(*valid, 2),
              ElementsAre(ElementsAre(31, 32, 33), ElementsAre(40, 41, 50),
                          ElementsAre(50, 51, 52), ElementsAre(52, 30, 31)));
  // (Megatron-LM 0.16.1 gives the same indices and samples for both splits, and no test split.)
}

TEST_F(TrainingDataTest, BlendWithUnevenWeightsAndAnExhaustedDataset) {
  // A: the five sequences (17 tokens); B: 60 61 62 | 70 71 (5 tokens, 2 samples per epoch).
  // Weights 1:2 of 10 train samples: A serves 4 and B 7 (the hand trace above); built with the
  // surplus, A gets 5 samples (1 epoch) and B 8, so B runs out after 2 samples and cycles
  // through E = 4 epochs (8·2 + 1 = 17 tokens ≤ 4·5) of fresh shuffles.
  TrainingDataOptions o;
  o.paths = {"1", WriteFive(), "2", Write("b", {{60, 61, 62}, {70, 71}})};
  o.seq_len = 2;
  o.seed = 5489;
  o.num_samples = {10, 0, 0};
  auto data = TrainingData::Open(o);
  ASSERT_OK(data);
  const SampleSource* train = (*data)->split(SplitKind::kTrain);
  ASSERT_NE(train, nullptr);
  ASSERT_TRUE(train->blended());
  EXPECT_EQ(train->size(), 11);
  EXPECT_THAT(train->blend().dataset_index, ElementsAre(1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1));
  EXPECT_THAT(train->blend().dataset_sample_index, ElementsAre(0, 0, 1, 1, 2, 3, 2, 4, 5, 3, 6));
  const GptDataset& a = *train->parts()[0];
  const GptDataset& b = *train->parts()[1];
  EXPECT_EQ(a.num_epochs(), 1);
  EXPECT_EQ(b.num_epochs(), 4);
  EXPECT_EQ(b.size(), (4 * 5 - 1) / 2);
  // The final epoch is separated when it contributes fewer than int(0.8 · 2) = 1 samples:
  // 8 − (3·5 − 1)/2 = 1, so it is not.
  EXPECT_FALSE(b.separate_final_epoch());
  // Every blend sample is the sample its dataset serves at that index.
  const std::vector<std::vector<int32_t>> got = Samples(*train, 2);
  for (int64_t i = 0; i < 11; ++i) {
    std::vector<int32_t> want(3);
    train->parts()[train->blend().dataset_index[i]]->GetSample(
        train->blend().dataset_sample_index[i], want.data());
    EXPECT_EQ(got[i], want) << i;
  }
  // Megatron-LM 0.16.1's BlendedMegatronDatasetBuilder on the same files, seed, sizes (printed by
  // tools/python/megatron_order_reference.py): the indices of both datasets and the 11 samples.
  EXPECT_THAT(a.document_index(), ElementsAre(0, 1, 3, 2, 4));
  EXPECT_THAT(a.shuffle_index(), ElementsAre(7, 0, 6, 3, 2, 1, 5, 4));
  EXPECT_THAT(b.document_index(), ElementsAre(0, 0, 1, 1, 1, 1, 0, 0));
  EXPECT_THAT(b.shuffle_index(), ElementsAre(7, 1, 6, 8, 0, 2, 4, 5, 3));
  EXPECT_THAT(got, ElementsAre(ElementsAre(60, 61, 62), ElementsAre(50, 51, 52),
                               ElementsAre(62, 60, 61), ElementsAre(10, 11, 12),
                               ElementsAre(70, 71, 60), ElementsAre(62, 60, 61),
                               ElementsAre(33, 34, 50), ElementsAre(60, 61, 62),
                               ElementsAre(61, 62, 70), ElementsAre(22, 40, 41),
                               ElementsAre(70, 71, 70)));
}

TEST_F(TrainingDataTest, IndexCacheIsKeyedByEverythingThatDeterminesIt) {
  TrainingDataOptions o;
  o.paths = {"1", WriteFive(), "2",
             Write("b", {{60, 61, 62}, {70, 71}, {80, 81, 82}, {90, 91}, {95, 96, 97}})};
  o.split = "4,1";
  o.seq_len = 2;
  o.seed = 5489;
  o.num_samples = {10, 3, 0};
  auto uncached = TrainingData::Open(o);
  ASSERT_OK(uncached);
  o.cache_dir = dir_ + "/cache";
  auto first = TrainingData::Open(o);
  ASSERT_OK(first);
  // Train and valid: 2 GPT datasets and a blend each.
  EXPECT_EQ((*first)->cache_hits(), 0);
  EXPECT_EQ((*first)->cache_writes(), 6);
  auto second = TrainingData::Open(o);
  ASSERT_OK(second);
  EXPECT_EQ((*second)->cache_hits(), 6);
  EXPECT_EQ((*second)->cache_writes(), 0);
  for (SplitKind k : {SplitKind::kTrain, SplitKind::kValid}) {
    EXPECT_EQ(Samples(*(*second)->split(k), 2), Samples(*(*uncached)->split(k), 2));
    EXPECT_EQ((*second)->split(k)->blend().dataset_index,
              (*uncached)->split(k)->blend().dataset_index);
  }
  // Another seed or sample count misses; a corrupt file is rebuilt, not read.
  o.seed = 7;
  auto reseeded = TrainingData::Open(o);
  ASSERT_OK(reseeded);
  EXPECT_EQ((*reseeded)->cache_hits(), 2);  // the blends do not depend on the seed
  for (const auto& entry : std::filesystem::directory_iterator(o.cache_dir)) {
    std::filesystem::resize_file(entry.path(), std::filesystem::file_size(entry.path()) / 2);
  }
  o.seed = 5489;
  auto repaired = TrainingData::Open(o);
  ASSERT_OK(repaired);
  EXPECT_EQ((*repaired)->cache_hits(), 0);
  EXPECT_EQ(Samples(*(*repaired)->split(SplitKind::kTrain), 2),
            Samples(*(*uncached)->split(SplitKind::kTrain), 2));
}

TEST_F(TrainingDataTest, BadInputIsNamed) {
  TrainingDataOptions o;
  o.paths = {WriteFive()};
  o.seq_len = 2;
  o.num_samples = {3, 0, 0};
  o.split = "0,1,0";
  auto data = TrainingData::Open(o);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr("the train share is 0"));
  // A validation range too small for one sample names the split and the dataset.
  o.split = "90,10";  // valid = [round(4.5) = 4, 5): 3 tokens
  o.seq_len = 3;
  o.num_samples = {3, 2, 0};
  data = TrainingData::Open(o);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr("valid split"));
  EXPECT_THAT(data.status().message(), HasSubstr("cannot fill one sample"));
  // Tokens outside the model's vocabulary.
  o.split = "";
  o.num_samples = {3, 0, 0};
  o.vocab_size = 50;
  data = TrainingData::Open(o);
  ASSERT_FALSE(data.ok());
  o.vocab_size = 0;
  o.paths = {"0", o.paths[0]};
  data = TrainingData::Open(o);
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr("not a positive number"));
}

}  // namespace
}  // namespace moefold::data
