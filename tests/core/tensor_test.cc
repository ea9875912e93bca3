// Tensor views, copies, conversions and the allocator's byte accounting.
#include "core/tensor.h"

#include "core/allocator.h"
#include "core/parameter.h"
#include "core/status.h"
#include "gtest/gtest.h"

namespace moefold {
namespace {

TEST(TensorTest, SliceAndReshareShareStorage) {
  Tensor t = Tensor::FromVector({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor rows = t.Slice(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.ToVector(), (std::vector<float>{2, 3, 4, 5}));
  rows.data<float>()[0] = 42;
  EXPECT_EQ(t.ToVector()[2], 42);
  Tensor flat = t.Reshape({6});
  EXPECT_EQ(flat.ToVector()[2], 42);
  Tensor copy = t.Clone();
  copy.data<float>()[0] = -1;
  EXPECT_EQ(t.ToVector()[0], 0);
}

TEST(TensorTest, ConversionsRoundThroughDType) {
  Tensor t = Tensor::FromVector({1.0f, 1.00390625f, 500.0f, -3.0f}, {4});
  EXPECT_EQ(t.To(DType::kBF16).ToVector(), (std::vector<float>{1.0f, 1.0f, 500.0f, -3.0f}));
  EXPECT_EQ(t.To(DType::kFp8E4M3).ToVector(), (std::vector<float>{1.0f, 1.0f, 448.0f, -3.0f}));
  EXPECT_EQ(t.To(DType::kBF16).nbytes(), 8u);
}

TEST(TensorTest, AllocatorCountsBytes) {
  CpuAllocator& mem = CpuMemory();
  const size_t before = mem.current_bytes();
  {
    Tensor t = Tensor::Zeros({1000}, DType::kF32);
    EXPECT_EQ(mem.current_bytes(), before + 4000);
    EXPECT_GE(mem.peak_bytes(), before + 4000);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % CpuAllocator::kAlignment, 0u);
  }
  EXPECT_EQ(mem.current_bytes(), before);
}

TEST(TensorDeathTest, WrongElementTypeIsAnInvariantFailure) {
  Tensor t = Tensor::Zeros({2}, DType::kF32);
  EXPECT_DEATH(t.data<int32_t>(), "does not match");
  EXPECT_DEATH(t.Slice(1, 3), "slice");
}

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}
absl::Status Quarter(int x, int* out) {
  MF_ASSIGN_OR_RETURN(int h, Half(x));
  MF_ASSIGN_OR_RETURN(*out, Half(h));
  return absl::OkStatus();
}

TEST(StatusTest, MacrosPropagate) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  absl::Status s = Quarter(6, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Annotate(s, "layer 3").message(), "layer 3: odd");
}

}  // namespace
}  // namespace moefold

namespace moefold {
namespace {

TEST(ParameterSetTest, FlattenKeepsValuesAndMakesViewsIntoPaddedBuffers) {
  ParameterSet set;
  Parameter* a = set.Add("a.weight", {2, 3}, GradReduction::kDenseDataCp, 1.0f);
  Parameter* e = set.Add("m.experts.w.weight", {2, 2}, GradReduction::kExpertData, 1.0f);
  e->sharding.expert_dim = 0;
  Parameter* n = set.Add("n.weight", {3}, GradReduction::kDenseDataCpTp, 0.0f, false, 1.0f);
  set.Initialize(3);
  const std::vector<float> a_before = a->value.ToVector();
  auto& flat = set.Flatten(4);
  ASSERT_EQ(flat.size(), 3u);  // one buffer per reduction: dense, dp-cp+tp, expert
  EXPECT_EQ(flat[0].reduction, GradReduction::kDenseDataCp);
  EXPECT_EQ(flat[0].used, 6);
  EXPECT_EQ(flat[0].values.numel(), 8);  // padded to a multiple of 4
  EXPECT_EQ(flat[1].reduction, GradReduction::kDenseDataCpTp);
  EXPECT_EQ(flat[1].values.numel(), 4);
  EXPECT_EQ(flat[2].reduction, GradReduction::kExpertData);
  EXPECT_EQ(flat[2].values.numel(), 4);
  EXPECT_EQ(a->value.ToVector(), a_before);
  EXPECT_EQ(n->value.ToVector(), (std::vector<float>{1, 1, 1}));
  // Writing through the parameter is visible in the buffer and vice versa.
  a->grad.data<float>()[5] = 7;
  EXPECT_EQ(flat[0].grads.ToVector()[5], 7);
  flat[1].values.data<float>()[0] = 9;
  EXPECT_EQ(n->value.ToVector()[0], 9);
  set.ZeroGrads(CpuStream());
  EXPECT_EQ(a->grad.ToVector()[5], 0);
}

TEST(ParameterSetTest, ShardRangesCoverTheDimensionInOrder) {
  EXPECT_EQ(ShardRange(257, 0, 2), (std::pair<int64_t, int64_t>{0, 129}));
  EXPECT_EQ(ShardRange(257, 1, 2), (std::pair<int64_t, int64_t>{129, 257}));
  EXPECT_EQ(ShardRange(8, 3, 4), (std::pair<int64_t, int64_t>{6, 8}));
  EXPECT_EQ(ShardRange(5, 3, 4), (std::pair<int64_t, int64_t>{5, 5}));  // an empty last shard
}

// A shard's initial values are exactly its slice of the unsharded draw, for any split dimension,
// uneven splits, and per-expert streams of stacked expert tensors.
TEST(ParameterSetTest, ShardsInitialiseToTheirSliceOfTheWholeTensor) {
  ParameterSet whole;
  Parameter* w = whole.Add("w.weight", {7, 3, 4}, GradReduction::kDenseDataCp, 0.5f);
  Parameter* e = whole.Add("m.experts.up_proj.weight", {2, 6, 5}, GradReduction::kExpertData, 0.5f);
  e->sharding.expert_dim = 0;
  whole.Initialize(11);
  for (int dim : {0, 1, 2}) {
    for (int size : {2, 3}) {
      for (int rank = 0; rank < size; ++rank) {
        ParameterSet part;
        Parameter* ws = part.Add("w.weight", {7, 3, 4}, GradReduction::kDenseDataCp, 0.5f, true,
                                 0.0f, {.dim = dim, .rank = rank, .size = size});
        Parameter* es = part.Add("m.experts.up_proj.weight", {2, 6, 5}, GradReduction::kExpertData,
                                 0.5f, true, 0.0f, {.dim = dim == 0 ? 1 : dim, .rank = rank,
                                                    .size = size});
        es->sharding.expert_dim = 0;
        part.Initialize(11);
        for (auto [full, shard] : {std::pair{w, ws}, std::pair{e, es}}) {
          const Shape& g = full->value.shape();
          const int d = shard->sharding.tp_dim;
          const auto [begin, end] = ShardRange(g[d], rank, size);
          ASSERT_EQ(shard->value.dim(d), end - begin) << full->name;
          EXPECT_EQ(shard->sharding.tp_begin, begin);
          EXPECT_EQ(shard->sharding.global_shape, g);
          // Walk the shard's elements and compare with the whole tensor at global coordinates.
          const std::vector<float> all = full->value.ToVector(), mine = shard->value.ToVector();
          int64_t i = 0;
          for (int64_t a = 0; a < shard->value.dim(0); ++a) {
            for (int64_t b = 0; b < shard->value.dim(1); ++b) {
              for (int64_t c = 0; c < shard->value.dim(2); ++c, ++i) {
                int64_t idx[3] = {a, b, c};
                idx[d] += begin;
                EXPECT_EQ(mine[i], all[(idx[0] * g[1] + idx[1]) * g[2] + idx[2]])
                    << full->name << " dim " << d << " rank " << rank << "/" << size;
              }
            }
          }
        }
      }
    }
  }
}

// Expert parallelism holds a range of experts (and ETP a range of each expert's FFN): the values are
// those experts' slices of the whole stacked tensor.
TEST(ParameterSetTest, ExpertShardsHoldTheirExpertsSlices) {
  ParameterSet whole;
  Parameter* e = whole.Add("m.experts.down_proj.weight", {4, 3, 6}, GradReduction::kExpertData,
                           0.5f, true, 0.0f, {}, {.first = 0, .count = 4});
  whole.Initialize(5);
  ParameterSet part;
  Parameter* es = part.Add("m.experts.down_proj.weight", {4, 3, 6}, GradReduction::kExpertData,
                           0.5f, true, 0.0f, {.dim = 2, .rank = 1, .size = 2},
                           {.first = 2, .count = 2});
  part.Initialize(5);
  ASSERT_EQ(es->value.shape(), (Shape{2, 3, 3}));
  EXPECT_EQ(es->sharding.expert_offset, 2);
  const std::vector<float> all = e->value.ToVector(), mine = es->value.ToVector();
  for (int64_t x = 0; x < 2; ++x) {
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t c = 0; c < 3; ++c) {
        EXPECT_EQ(mine[(x * 3 + r) * 3 + c], all[((x + 2) * 3 + r) * 6 + c + 3]);
      }
    }
  }
}

}  // namespace
}  // namespace moefold
