// The token dispatcher under mpirun (1, 2, 4 and 8 ranks) for every (EP, ETP) the world allows:
// dispatch followed by combine with weights 1/k is the identity in value and gradient; rows reach
// the expert they were routed to; zero rows to an expert, zero rows on a whole rank and every row
// to one expert all work (nobody hangs); padding to capacity changes nothing but the shapes.
#include "parallel/token_dispatcher.h"

#include <mpi.h>

#include "gtest/gtest.h"
#include "ops/moe.h"
#include "parallel/process_groups.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;

constexpr int kExperts = 8, kTopK = 2, kHidden = 6;

enum class Routing { kRandom, kAllToExpertZero, kEmptyRank, kSkipOddExperts };

struct Layout {
  int ep, etp;
  Routing routing;
  int64_t pad_to;  // 0 = dropless
};

std::string Name(const Layout& l) {
  const char* routing[] = {"Random", "AllToExpert0", "EmptyRank", "SkipOddExperts"};
  return "Ep" + std::to_string(l.ep) + "Etp" + std::to_string(l.etp) + routing[int(l.routing)] +
         (l.pad_to > 0 ? "Pad" + std::to_string(l.pad_to) : "");
}

std::vector<Layout> Layouts() {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  std::vector<Layout> out;
  for (int ep = 1; ep <= world; ep *= 2) {
    for (int etp = 1; ep * etp <= world; etp *= 2) {
      if (world % (ep * etp) != 0) continue;
      for (Routing r : {Routing::kRandom, Routing::kAllToExpertZero, Routing::kEmptyRank,
                        Routing::kSkipOddExperts}) {
        out.push_back({ep, etp, r, 0});
      }
      out.push_back({ep, etp, Routing::kRandom, 40});
    }
  }
  return out;
}

struct Rank {
  std::unique_ptr<ProcessGroups> groups;
  DispatchGroups dispatch;
};

Rank MakeRank(const Layout& l) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  auto mapping = Mapping::Create(world, {.etp = l.etp, .ep = l.ep});
  MF_CHECK(mapping.ok()) << mapping.status();
  auto groups = ProcessGroups::Create(*mapping);
  MF_CHECK(groups.ok()) << groups.status();
  Rank r{std::move(*groups), {}};
  r.dispatch.ep = *r.groups->Get(GroupKind::kEp);
  r.dispatch.etp = *r.groups->Get(GroupKind::kEtp);
  r.dispatch.etp_ep = *r.groups->Get(GroupKind::kEtpEp);
  return r;
}

// This rank's tokens and their routing.
void MakeTokens(const Layout& l, int rank, Tensor* x, Tensor* ids) {
  const int64_t t = l.routing == Routing::kEmptyRank && rank % 2 == 1 ? 0 : 5 + rank;
  *x = RandomNormal({t, kHidden}, 100 + rank);
  *ids = Tensor::Empty({t, kTopK}, DType::kI32);
  const Tensor random = RandomInts({std::max<int64_t>(t, 1), kTopK}, 200 + rank, kExperts);
  for (int64_t i = 0; i < t; ++i) {
    for (int j = 0; j < kTopK; ++j) {
      int32_t e = random.data<int32_t>()[i * kTopK + j];
      if (l.routing == Routing::kAllToExpertZero) e = 0;
      if (l.routing == Routing::kSkipOddExperts) e -= e % 2;
      ids->data<int32_t>()[i * kTopK + j] = e;
    }
  }
}

class TokenDispatcherTest : public ::testing::TestWithParam<Layout> {};

TEST_P(TokenDispatcherTest, DispatchThenCombineIsTheIdentityInValueAndGradient) {
  const Layout l = GetParam();
  Rank r = MakeRank(l);
  const int rank = r.groups->world().rank();
  Tensor x, ids;
  MakeTokens(l, rank, &x, &ids);
  const int64_t t = x.dim(0);
  Tensor sorted = Tensor::Empty({t * kTopK}, DType::kI32);
  Tensor counts = Tensor::Empty({kExperts}, DType::kI32);
  ops::ComputePermutation(ids, kExperts, &sorted, &counts, CpuStream());
  std::vector<int64_t> c(counts.data<int32_t>(), counts.data<int32_t>() + kExperts);
  auto plan = BuildDispatchPlan(c, {.pad_to = l.pad_to}, r.dispatch);
  ASSERT_OK(plan);
  EXPECT_EQ(plan->local_counts.numel(), kExperts / l.ep);
  Tensor permuted = Tensor::Empty({t * kTopK, kHidden}, DType::kF32);
  ops::PermuteTokens(x, sorted, kTopK, &permuted, CpuStream());

  // "Experts": expert e scales its rows by (e + 1); each ETP rank contributes 1/etp of it.
  Tensor grouped;
  ASSERT_OK(Dispatch(*plan, r.dispatch, permuted, &grouped));
  // The "experts" below scale in place; the identity plan (one rank, no padding) hands back
  // `permuted` itself, which is read again later.
  grouped = grouped.Clone();
  const int first_expert = r.dispatch.ep_rank() * (kExperts / l.ep);
  auto scale_by_expert = [&](Tensor* rows, bool inverse) {
    int64_t row = 0;
    for (int le = 0; le < kExperts / l.ep; ++le) {
      const float s = inverse ? 1.0f / (first_expert + le + 1) : float(first_expert + le + 1);
      for (int32_t i = 0; i < plan->local_counts.data<int32_t>()[le]; ++i, ++row) {
        for (int h = 0; h < kHidden; ++h) rows->data<float>()[row * kHidden + h] *= s / l.etp;
      }
    }
  };
  scale_by_expert(&grouped, false);
  Tensor back;
  ASSERT_OK(Combine(*plan, r.dispatch, grouped, &back));
  ASSERT_EQ(back.dim(0), t * kTopK);
  // Row r of `back` is token sorted[r] / k's row times (its expert + 1).
  for (int64_t row = 0; row < t * kTopK; ++row) {
    const int32_t pair = sorted.data<int32_t>()[row];
    const float s = float(ids.data<int32_t>()[pair] + 1);
    for (int h = 0; h < kHidden; ++h) {
      ASSERT_NEAR(back.data<float>()[row * kHidden + h],
                  s * x.data<float>()[(pair / kTopK) * kHidden + h], 1e-5)
          << "row " << row;
    }
  }

  // The identity: undo the expert scale, unpermute with weights 1/k; then the gradient through
  // Combine's backward (Dispatch) and Dispatch's backward (Combine).
  ASSERT_OK(Dispatch(*plan, r.dispatch, permuted, &grouped));
  grouped = grouped.Clone();
  scale_by_expert(&grouped, false);
  scale_by_expert(&grouped, true);
  // Now 1/etp² of each row: one factor etp back leaves the 1/etp share every ETP rank adds.
  for (int64_t i = 0; i < grouped.numel(); ++i) grouped.data<float>()[i] *= l.etp;
  ASSERT_OK(Combine(*plan, r.dispatch, grouped, &back));
  Tensor weights = Tensor::Empty({t, kTopK}, DType::kF32);
  weights.Fill(1.0f / kTopK);
  Tensor y = Tensor::Empty({t, kHidden}, DType::kF32);
  ops::UnpermuteTokens(back, sorted, weights, &y, CpuStream());
  EXPECT_TENSOR_NEAR(y, x, 1e-5, 1e-6);

  const Tensor d_y = RandomNormal({t, kHidden}, 300 + rank);
  Tensor d_back = Tensor::Empty({t * kTopK, kHidden}, DType::kF32);
  Tensor d_weights = Tensor::Empty({t, kTopK}, DType::kF32);
  ops::UnpermuteTokensBackward(d_y, back, sorted, weights, &d_back, &d_weights, CpuStream());
  Tensor d_grouped;
  ASSERT_OK(Dispatch(*plan, r.dispatch, d_back, &d_grouped));  // Combine's backward
  for (int64_t i = 0; i < d_grouped.numel(); ++i) d_grouped.data<float>()[i] *= 1.0f / l.etp;
  Tensor d_permuted;
  ASSERT_OK(Combine(*plan, r.dispatch, d_grouped, &d_permuted));  // Dispatch's backward
  Tensor d_x = Tensor::Empty({t, kHidden}, DType::kF32);
  ops::PermuteTokensBackward(d_permuted, sorted, kTopK, &d_x, CpuStream());
  EXPECT_TENSOR_NEAR(d_x, d_y, 1e-5, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Layouts, TokenDispatcherTest, ::testing::ValuesIn(Layouts()),
                         [](const auto& info) { return Name(info.param); });

TEST(TokenDispatcherPlanTest, RefusesExpertsThatDoNotSplitAndCountsOverCapacity) {
  EXPECT_OK(BuildDispatchPlan({1, 2, 3}, {}, {}));  // E = 3 over ep 1 is fine
  const auto over = BuildDispatchPlan({1, 5}, {.pad_to = 4}, {});
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("expert 1 has 5 rows > capacity 4"), std::string::npos)
      << over.status();
}

}  // namespace
}  // namespace moefold::parallel
