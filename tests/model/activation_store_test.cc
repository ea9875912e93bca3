// The activation store's own contract, on the CPU: a kind's policy decides what is released, what
// goes to the host arena (the first ⌊α·rows⌋ token rows) and what stays; a view follows its base;
// an empty tensor stays; resident layers keep what they would swap; Prefetch/Place bring whole
// tensors back, and a partly swapped one as a full-shape tensor whose first rows are the swapped
// ones, marked with the first row the recompute must produce; the recompute helpers hand out just
// those rows. Policy and kind names parse, and bad ones are refused by name.
#include "core/model/activation_store.h"

#include "core/model/recompute_rows.h"

#include "gtest/gtest.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

Tensor Counting(const Shape& shape) {
  Tensor t = Tensor::Empty(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

StepContext Cpu() {
  StepContext ctx;
  ctx.stream = &CpuStream();
  return ctx;
}

TEST(ActivationStoreTest, SelectiveReleasesItsKindsAndViewsFollowTheirBase) {
  ActivationStore store(ActivationPolicy::Selective());
  Tensor input = Counting({4, 3}), norm = Counting({4, 3}), out = Counting({4, 3});
  Tensor view = norm.Slice(1, 3);  // e.g. the routed rows of the FFN input
  Tensor empty = Tensor::Empty({0, 3}, DType::kF32);
  std::vector<SavedRef> refs = {{SavedKind::kLayerInput, &input},
                                {SavedKind::kNormOutput, &norm},
                                {SavedKind::kRouter, &view},  // a view: follows norm
                                {SavedKind::kAttentionOutput, &out},
                                {SavedKind::kSwiGluInput, &empty}};
  SwapStash stash;
  EXPECT_OK(store.Release(Cpu(), 0, false, refs, &stash));
  EXPECT_TRUE(input.defined());
  EXPECT_FALSE(norm.defined());
  EXPECT_FALSE(view.defined());
  EXPECT_TRUE(out.defined());
  EXPECT_TRUE(empty.defined()) << "nothing to free";
  EXPECT_TRUE(stash.entries.empty());
}

TEST(ActivationStoreTest, SwapSendsTheFirstAlphaRowsToTheHostArenaAndBringsThemBack) {
  ActivationStore store(ActivationPolicy::Swap(0.5f));
  const Tensor original_q = Counting({2, 3, 2, 2}), original_h = Counting({5, 4});
  Tensor input = Counting({6, 4}), q = original_q.Clone(), h = original_h.Clone(),
         combined = Counting({4, 4}), rstd = Counting({6});
  const Tensor original_combined = combined.Clone();
  std::vector<SavedRef> refs = {{SavedKind::kLayerInput, &input},
                                {SavedKind::kAttentionQkv, &q},
                                {SavedKind::kResidual, &h},
                                {SavedKind::kMoeCombined, &combined, /*recomputable=*/false},
                                {SavedKind::kNormStats, &rstd}};
  const int64_t before = static_cast<int64_t>(ActivationStore::CpuHostArena().current_bytes());
  SwapStash stash;
  EXPECT_OK(store.Release(Cpu(), 3, false, refs, &stash));
  EXPECT_FALSE(q.defined());
  EXPECT_FALSE(h.defined());
  EXPECT_FALSE(combined.defined());
  EXPECT_TRUE(rstd.defined());
  ASSERT_EQ(stash.entries.size(), 3u);
  EXPECT_EQ(stash.entries[0].total_rows, 6);  // (B, S, ...) → B·S token rows
  EXPECT_EQ(stash.entries[0].rows, 3);
  EXPECT_EQ(stash.entries[1].rows, 2);  // ⌊0.5 · 5⌋
  EXPECT_EQ(stash.entries[2].rows, 4) << "rows that need an exchange go whole";
  // 3·4 + 2·4 + 4·4 floats in the host arena.
  EXPECT_EQ(static_cast<int64_t>(ActivationStore::CpuHostArena().current_bytes()) - before,
            (12 + 8 + 16) * 4);

  auto fetched = store.Prefetch(Cpu(), stash);
  ASSERT_TRUE(fetched.ok());
  RecomputeRows partial;
  EXPECT_OK(store.Place(Cpu(), refs, *fetched, stash, &partial));
  EXPECT_TRUE(combined.defined());
  EXPECT_EQ(combined.ToVector(), original_combined.ToVector());
  ASSERT_TRUE(q.defined()) << "partly swapped: placed with its host rows";
  EXPECT_EQ(q.shape(), original_q.shape());
  EXPECT_EQ(partial.FirstMissing(q), 3);
  EXPECT_EQ(partial.FirstMissing(h), 2);
  EXPECT_EQ(partial.FirstMissing(combined), 4) << "every row came back";
  EXPECT_EQ(partial.FirstMissing(rstd), 6) << "kept";
  const std::vector<float> qv = q.ToVector(), expect_q = original_q.ToVector();
  for (int i = 0; i < 12; ++i) EXPECT_EQ(qv[i], expect_q[i]) << i;  // 3 rows of 4
  EXPECT_EQ(h.ToVector()[7], original_h.ToVector()[7]);

  // The recompute's view: only the missing rows, counted.
  StepContext ctx = Cpu();
  ctx.recompute_rows = &partial;
  EXPECT_EQ(RecomputeFrom(ctx, {&q}, /*split=*/true), 3);
  EXPECT_EQ(RecomputeFrom(ctx, {&q}, /*split=*/false), 0);
  EXPECT_EQ(RecomputeFrom(ctx, {&q, &h}, true), 2) << "the smallest first missing row";
  EXPECT_EQ(RecomputeFrom(ctx, {&combined}, true), 4) << "nothing to do";
  const int64_t counted = RecomputedRowsTotal();
  Tensor rows = RecomputeRowsOf(ctx, &q, q.shape(), DType::kF32, 3);
  EXPECT_EQ(rows.shape(), (Shape{3, 2, 2})) << "(B, S, ...) flattened to token rows";
  EXPECT_EQ(rows.raw_data(), TokenRowSlice(q, 3).raw_data()) << "a view of the placed tensor";
  EXPECT_EQ(RecomputedRowsTotal() - counted, 3);
  Tensor scratch = RecomputeRowsOf(ctx, &rstd, {6}, DType::kF32, 4);
  EXPECT_EQ(scratch.shape(), (Shape{2}));
  EXPECT_NE(scratch.raw_data(), rstd.Slice(4, 6).raw_data()) << "a complete tensor is not written";
  Tensor undefined;
  Tensor all = RecomputeRowsOf(ctx, &undefined, {5, 4}, DType::kF32, 0);
  EXPECT_TRUE(undefined.defined());
  EXPECT_EQ(all.raw_data(), undefined.raw_data());
}

TEST(ActivationStoreTest, ResidentLayersAndLayersOutsideThePolicyKeep) {
  ActivationPolicy policy = ActivationPolicy::Full();
  policy.layers = {1};
  ActivationStore store(policy);
  Tensor norm = Counting({2, 2});
  std::vector<SavedRef> refs = {{SavedKind::kNormOutput, &norm}};
  SwapStash stash;
  EXPECT_OK(store.Release(Cpu(), 0, false, refs, &stash));
  EXPECT_TRUE(norm.defined()) << "layer 0 is not in memory.recompute_layers";
  EXPECT_OK(store.Release(Cpu(), 1, false, refs, &stash));
  EXPECT_FALSE(norm.defined());

  ActivationStore swap(ActivationPolicy::Swap(1.0f));
  Tensor h = Counting({2, 2});
  std::vector<SavedRef> residual = {{SavedKind::kResidual, &h}};
  EXPECT_OK(swap.Release(Cpu(), 5, /*last_resident=*/true, residual, &stash));
  EXPECT_TRUE(h.defined());
  EXPECT_TRUE(stash.entries.empty());
}

TEST(ActivationStoreTest, NamesParseAndUnknownOnesAreRefused) {
  for (int k = 0; k < kNumSavedKinds; ++k) {
    const auto kind = static_cast<SavedKind>(k);
    auto parsed = ParseSavedKind(SavedKindName(kind));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, kind);
  }
  EXPECT_EQ(*ParseSavePolicy("swap"), SavePolicy::kSwap);
  const absl::Status bad = ParseSavedKind("qkv").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.message()).find("unknown saved tensor kind \"qkv\""),
            std::string::npos);
  EXPECT_FALSE(ParseSavePolicy("evict").ok());
}

}  // namespace
}  // namespace moefold::model
