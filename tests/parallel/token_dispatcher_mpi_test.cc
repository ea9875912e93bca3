// The token dispatcher under mpirun (1, 2, 4 and 8 ranks) for every (EP, ETP) the world allows, in
// f32 and bf16, with one expert chunk or several: dispatch followed by combine with weights 1/k is
// the identity in value and gradient; rows reach the expert they were routed to; the pipelined
// DispatchAndCombine gives what Dispatch, the experts and Combine give, bit for bit; the plan's
// counts match every member's routing and the byte counter what the rows' dtype makes of them;
// zero rows to an expert, zero rows on a whole rank and every row to one expert all work (nobody
// hangs); padding to capacity changes nothing but the shapes; on a GPU (ranks sharing it through
// host staging) every result equals the CPU's. The "experts" scale by powers of two, ETP shares are
// powers of two too and the values have 8 significant bits, so every result is exact in f32 and
// bf16 alike.
#include "parallel/token_dispatcher.h"

#include <mpi.h>

#include <cstring>
#include <numeric>

#include "gtest/gtest.h"
#include "ops/device_query.h"
#include "ops/fp8.h"
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
  int chunks;
  DType dtype;
};

std::string Name(const Layout& l) {
  const char* routing[] = {"Random", "AllToExpert0", "EmptyRank", "SkipOddExperts"};
  return "Ep" + std::to_string(l.ep) + "Etp" + std::to_string(l.etp) + routing[int(l.routing)] +
         (l.pad_to > 0 ? "Pad" + std::to_string(l.pad_to) : "") +
         (l.chunks > 1 ? "Chunks" + std::to_string(l.chunks) : "") +
         (l.dtype == DType::kBF16 ? "Bf16" : "");
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
        out.push_back({ep, etp, r, 0, 1, DType::kF32});
      }
      out.push_back({ep, etp, Routing::kRandom, 40, 1, DType::kF32});
      // Several chunks (capped at the local experts), in both dtypes, padded or not.
      out.push_back({ep, etp, Routing::kRandom, 0, 3, DType::kF32});
      out.push_back({ep, etp, Routing::kEmptyRank, 0, 2, DType::kBF16});
      out.push_back({ep, etp, Routing::kRandom, 0, 2, DType::kBF16});
      out.push_back({ep, etp, Routing::kRandom, 40, 2, DType::kBF16});
    }
  }
  return out;
}

struct Rank {
  std::unique_ptr<ProcessGroups> groups;
  DispatchGroups dispatch;
};

Rank MakeRank(const Layout& l, CommBackend backend = CommBackend::kMpi) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  auto mapping = Mapping::Create(world, {.etp = l.etp, .ep = l.ep});
  MF_CHECK(mapping.ok()) << mapping.status();
  auto groups = ProcessGroups::Create(*mapping, {.backend = backend});
  MF_CHECK(groups.ok()) << groups.status();
  Rank r{std::move(*groups), {}};
  r.dispatch.ep = *r.groups->Get(GroupKind::kEp);
  r.dispatch.etp = *r.groups->Get(GroupKind::kEtp);
  r.dispatch.etp_ep = *r.groups->Get(GroupKind::kEtpEp);
  return r;
}

// Values with bf16's 8 significant bits in either dtype, so sums of up to 8 of them (the ETP
// shares) are exact in f32.
Tensor Short(const Tensor& t, DType dtype) { return t.To(DType::kBF16).To(dtype); }

// This rank's tokens (in the layout's dtype), their routing and its permutation.
struct Routed {
  Tensor x, ids, sorted;           // (T, H), (T, k) i32, (T·k) i32
  Tensor permuted;                 // (T·k, H) the rows grouped by expert
  std::vector<int64_t> counts;     // (E) rows per expert
};

Routed Route(const Layout& l, int rank) {
  Routed r;
  const int64_t t = l.routing == Routing::kEmptyRank && rank % 2 == 1 ? 0 : 5 + rank;
  r.x = Short(RandomNormal({t, kHidden}, 100 + rank), l.dtype);
  r.ids = Tensor::Empty({t, kTopK}, DType::kI32);
  const Tensor random = RandomInts({std::max<int64_t>(t, 1), kTopK}, 200 + rank, kExperts);
  for (int64_t i = 0; i < t; ++i) {
    for (int j = 0; j < kTopK; ++j) {
      int32_t e = random.data<int32_t>()[i * kTopK + j];
      if (l.routing == Routing::kAllToExpertZero) e = 0;
      if (l.routing == Routing::kSkipOddExperts) e -= e % 2;
      r.ids.data<int32_t>()[i * kTopK + j] = e;
    }
  }
  r.sorted = Tensor::Empty({t * kTopK}, DType::kI32);
  Tensor counts = Tensor::Empty({kExperts}, DType::kI32);
  ops::ComputePermutation(r.ids, kExperts, &r.sorted, &counts, CpuStream());
  r.counts.assign(counts.data<int32_t>(), counts.data<int32_t>() + kExperts);
  r.permuted = Tensor::Empty({t * kTopK, kHidden}, l.dtype);
  ops::PermuteTokens(r.x, r.sorted, kTopK, &r.permuted, CpuStream());
  return r;
}

// rows (local-expert major, counts[le] rows for local expert first + le) multiplied row by row:
// expert e's rows by 2^(e % 4) (or its inverse) / share. Exact in f32 and bf16.
Tensor ScaleByExpert(const Tensor& rows, const Tensor& counts, int first, bool inverse,
                     float share) {
  Tensor f = rows.To(DType::kF32);
  int64_t row = 0;
  for (int le = 0; le < counts.numel(); ++le) {
    const float power = static_cast<float>(1 << ((first + le) % 4));
    const float s = (inverse ? 1.0f / power : power) / share;
    for (int32_t i = 0; i < counts.data<int32_t>()[le]; ++i, ++row) {
      for (int h = 0; h < kHidden; ++h) f.data<float>()[row * kHidden + h] *= s;
    }
  }
  return f.To(rows.dtype());
}

class TokenDispatcherTest : public ::testing::TestWithParam<Layout> {};

TEST_P(TokenDispatcherTest, DispatchThenCombineIsTheIdentityInValueAndGradient) {
  const Layout l = GetParam();
  Rank r = MakeRank(l);
  const int rank = r.groups->world().rank();
  const Routed in = Route(l, rank);
  const Tensor &x = in.x, &ids = in.ids, &sorted = in.sorted, &permuted = in.permuted;
  const int64_t t = x.dim(0);
  const std::vector<int64_t>& c = in.counts;
  auto plan = BuildDispatchPlan(c, {.pad_to = l.pad_to, .chunks = l.chunks}, r.dispatch);
  ASSERT_OK(plan);
  EXPECT_EQ(plan->local_counts.numel(), kExperts / l.ep);
  EXPECT_EQ(static_cast<int>(plan->chunks.size()), std::min(l.chunks, kExperts / l.ep));

  // "Experts": expert e scales its rows by 2^(e % 4); each ETP rank contributes 1/etp of it.
  const int first_expert = r.dispatch.ep_rank() * (kExperts / l.ep);
  const float etp = static_cast<float>(l.etp);
  Tensor grouped;
  ASSERT_OK(Dispatch(*plan, r.dispatch, permuted, &grouped, CpuStream()));
  EXPECT_EQ(grouped.dtype(), l.dtype);
  Tensor back;
  ASSERT_OK(Combine(*plan, r.dispatch,
                    ScaleByExpert(grouped, plan->local_counts, first_expert, false, etp), &back,
                    CpuStream()));
  ASSERT_EQ(back.dim(0), t * kTopK);
  // Row r of `back` is token sorted[r] / k's row times 2^(its expert % 4).
  const std::vector<float> xs = x.ToVector(), backs = back.ToVector();
  for (int64_t row = 0; row < t * kTopK; ++row) {
    const int32_t pair = sorted.data<int32_t>()[row];
    const float s = static_cast<float>(1 << (ids.data<int32_t>()[pair] % 4));
    for (int h = 0; h < kHidden; ++h) {
      ASSERT_EQ(backs[row * kHidden + h], s * xs[(pair / kTopK) * kHidden + h]) << "row " << row;
    }
  }

  // The pipelined form, experts between the chunks' exchanges, gives the same bits, and hands each
  // chunk its own slice of the grouped rows.
  int calls = 0;
  auto experts = [&](const DispatchChunk& chunk, const Tensor& rows, Tensor* out,
                     const std::function<void()>& progress) {
    EXPECT_EQ(&chunk, &plan->chunks[calls]) << "chunks in order";
    progress();
    ++calls;
    EXPECT_EQ(rows.dim(0), chunk.grouped_rows);
    out->CopyFrom(ScaleByExpert(rows, chunk.local_counts, first_expert + chunk.first_expert, false,
                                etp));
    return absl::OkStatus();
  };
  Tensor pipelined_grouped, pipelined;
  ASSERT_OK(DispatchAndCombine(*plan, r.dispatch, permuted, experts, &pipelined_grouped,
                               &pipelined, CpuStream()));
  EXPECT_EQ(calls, static_cast<int>(plan->chunks.size()));
  EXPECT_EQ(pipelined_grouped.ToVector(), grouped.ToVector());
  EXPECT_EQ(pipelined.ToVector(), backs);

  // The identity: scale and unscale, unpermute with weights 1/k; then the gradient through
  // Combine's backward (Dispatch) and Dispatch's backward (Combine).
  Tensor unscaled = ScaleByExpert(
      ScaleByExpert(grouped, plan->local_counts, first_expert, false, etp), plan->local_counts,
      first_expert, true, 1.0f);  // each ETP rank adds its 1/etp share of the row
  ASSERT_OK(Combine(*plan, r.dispatch, unscaled, &back, CpuStream()));
  Tensor weights = Tensor::Empty({t, kTopK}, DType::kF32);
  weights.Fill(1.0f / kTopK);
  Tensor y = Tensor::Empty({t, kHidden}, l.dtype);
  ops::UnpermuteTokens(back, sorted, weights, &y, CpuStream());
  EXPECT_EQ(y.ToVector(), xs);

  const Tensor d_y = Short(RandomNormal({t, kHidden}, 300 + rank), l.dtype);
  Tensor d_back = Tensor::Empty({t * kTopK, kHidden}, l.dtype);
  Tensor d_weights = Tensor::Empty({t, kTopK}, DType::kF32);
  ops::UnpermuteTokensBackward(d_y, back, sorted, weights, &d_back, &d_weights, CpuStream());
  Tensor d_grouped;
  ASSERT_OK(Dispatch(*plan, r.dispatch, d_back, &d_grouped, CpuStream()));  // Combine's backward
  d_grouped = ScaleByExpert(d_grouped, plan->local_counts, first_expert, false, 2.0f * etp);
  d_grouped = ScaleByExpert(d_grouped, plan->local_counts, first_expert, true, 0.5f);
  Tensor d_permuted;
  ASSERT_OK(Combine(*plan, r.dispatch, d_grouped, &d_permuted, CpuStream()));  // and Dispatch's
  Tensor d_x = Tensor::Empty({t, kHidden}, l.dtype);
  ops::PermuteTokensBackward(d_permuted, sorted, kTopK, &d_x, CpuStream());
  EXPECT_EQ(d_x.ToVector(), d_y.ToVector());
}

TEST_P(TokenDispatcherTest, CountsMatchEveryMembersRoutingAndBytesTheDtype) {
  const Layout l = GetParam();
  Rank r = MakeRank(l);
  const int rank = r.groups->world().rank(), world = r.groups->world().size();
  const Routed in = Route(l, rank);
  const Tensor& permuted = in.permuted;
  const std::vector<int64_t>& c = in.counts;
  auto plan = BuildDispatchPlan(c, {.pad_to = l.pad_to, .chunks = l.chunks}, r.dispatch);
  ASSERT_OK(plan);
  // Every world rank's counts, padded, by world rank.
  std::vector<int32_t> all(world * kExperts);
  const std::vector<int32_t> mine(c.begin(), c.end());
  MPI_Allgather(mine.data(), kExperts, MPI_INT32_T, all.data(), kExperts, MPI_INT32_T,
                MPI_COMM_WORLD);
  auto rows_of = [&](int world_rank, int expert) -> int64_t {
    return l.pad_to > 0 ? l.pad_to : all[world_rank * kExperts + expert];
  };
  const int local = kExperts / l.ep, first = r.dispatch.ep_rank() * local;
  // A local expert's grouped rows: every ETP×EP member's rows for it.
  const std::vector<int>& members = r.dispatch.etp_ep == nullptr
                                        ? std::vector<int>{rank}
                                        : r.dispatch.etp_ep->world_ranks();
  for (int le = 0; le < local; ++le) {
    int64_t expected = 0;
    for (int w : members) expected += rows_of(w, first + le);
    EXPECT_EQ(plan->local_counts.data<int32_t>()[le], expected) << "local expert " << le;
  }
  // What this rank sends each EP peer: its rows for the peer's experts.
  for (int p = 0; p < l.ep; ++p) {
    int64_t expected = 0;
    for (int le = 0; le < local; ++le) expected += rows_of(rank, p * local + le);
    EXPECT_EQ(plan->send_rows[p], expected) << "to EP peer " << p;
  }
  const int64_t recv = std::accumulate(plan->recv_rows.begin(), plan->recv_rows.end(), int64_t{0});
  EXPECT_EQ(plan->etp_rows[r.dispatch.etp_rank()], recv);
  EXPECT_EQ(plan->grouped_rows(),
            std::accumulate(plan->etp_rows.begin(), plan->etp_rows.end(), int64_t{0}));

  // Bytes to other ranks, rows in the dtype: the EP peers' rows each way; (etp − 1) copies of the
  // rows received out, and the other ETP members' partial sums back.
  const int64_t row_bytes = kHidden * static_cast<int64_t>(DTypeSize(l.dtype));
  const int64_t to_peers = plan->send_total() - plan->send_rows[r.dispatch.ep_rank()];
  const int64_t from_peers = recv - plan->recv_rows[r.dispatch.ep_rank()];
  const bool local_plan = l.ep == 1 && l.etp == 1;
  Tensor grouped, back;
  int64_t dispatched = 0, combined = 0;
  ASSERT_OK(Dispatch(*plan, r.dispatch, permuted, &grouped, CpuStream(), &dispatched));
  ASSERT_OK(Combine(*plan, r.dispatch, grouped, &back, CpuStream(), &combined));
  EXPECT_EQ(dispatched, local_plan ? 0 : (to_peers + (l.etp - 1) * recv) * row_bytes);
  EXPECT_EQ(combined, local_plan ? 0 : (from_peers + plan->grouped_rows() - recv) * row_bytes);
}

// The FP8 dispatch: FP8 codes and a per-row f32 scale travel together — each grouped row's codes
// are the cast of the row the plain dispatch delivers there, and its scale is that row's (each
// scale here is its row's first value, padding rows have 0 for both) — through Dispatch and the
// pipelined DispatchAndCombine, whose experts return the activation dtype. The bytes are the
// codes' (1 a value: a quarter of f32's, half of bf16's) plus 4 per row for the scale.
TEST_P(TokenDispatcherTest, Fp8RowsTravelWithTheirScalesAtAQuarterOfF32Bytes) {
  const Layout l = GetParam();
  Rank r = MakeRank(l);
  const Routed in = Route(l, r.groups->world().rank());
  const int64_t n = in.permuted.dim(0);
  auto plan = BuildDispatchPlan(in.counts, {.pad_to = l.pad_to, .chunks = l.chunks}, r.dispatch);
  ASSERT_OK(plan);
  const Tensor one = Tensor::FromVector({1.0f}, {1});
  Tensor codes = Tensor::Empty({n, kHidden}, DType::kFp8E4M3);
  ops::CastTransposeAmax(in.permuted, one, &codes, nullptr, nullptr, CpuStream());
  Tensor scales = Tensor::Empty({n, 1}, DType::kF32);
  const std::vector<float> rows = in.permuted.ToVector();
  for (int64_t i = 0; i < n; ++i) scales.data<float>()[i] = rows[i * kHidden];

  Tensor grouped;
  int64_t plain_bytes = 0, fp8_bytes = 0, pipelined_bytes = 0;
  ASSERT_OK(Dispatch(*plan, r.dispatch, in.permuted, &grouped, CpuStream(), &plain_bytes));
  const int64_t g = grouped.dim(0);
  Tensor want = Tensor::Empty({g, kHidden}, DType::kFp8E4M3);
  ops::CastTransposeAmax(grouped, one, &want, nullptr, nullptr, CpuStream());
  const std::vector<float> grouped_rows = grouped.ToVector();
  auto expect_grouped = [&](const DispatchRows& got, const char* what) {
    ASSERT_EQ(got.rows.dtype(), DType::kFp8E4M3) << what;
    ASSERT_EQ(got.rows.dim(0), g) << what;
    EXPECT_EQ(0, std::memcmp(got.rows.raw_data(), want.raw_data(), want.nbytes())) << what;
    ASSERT_EQ(got.scales.dim(0), g) << what;
    for (int64_t i = 0; i < g; ++i) {
      ASSERT_EQ(got.scales.data<float>()[i], grouped_rows[i * kHidden]) << what << " row " << i;
    }
  };
  DispatchRows fp8;
  ASSERT_OK(Dispatch(*plan, r.dispatch, {.rows = codes, .scales = scales}, &fp8, CpuStream(),
                     &fp8_bytes));
  expect_grouped(fp8, "Dispatch");

  auto experts = [&](const DispatchChunk& chunk, const Tensor& rows, Tensor* out,
                     const std::function<void()>&) {
    EXPECT_EQ(rows.dtype(), DType::kFp8E4M3);
    EXPECT_EQ(out->dtype(), l.dtype);
    out->SetZero();
    return absl::OkStatus();
  };
  DispatchRows pipelined;
  Tensor combined;
  ASSERT_OK(DispatchAndCombine(*plan, r.dispatch, {.rows = codes, .scales = scales}, l.dtype,
                               experts, &pipelined, &combined, CpuStream(), &pipelined_bytes));
  expect_grouped(pipelined, "DispatchAndCombine");
  EXPECT_EQ(combined.dtype(), l.dtype);
  EXPECT_EQ(combined.dim(0), n);

  // Rows sent: the plain bytes over the dtype's row; FP8 sends a byte a value and 4 per scale.
  const int64_t value_bytes = static_cast<int64_t>(DTypeSize(l.dtype));
  const int64_t rows_sent = plain_bytes / (kHidden * value_bytes);
  EXPECT_EQ(fp8_bytes, rows_sent * (kHidden + 4));
  EXPECT_EQ((fp8_bytes - 4 * rows_sent) * value_bytes, plain_bytes);
  // The pipelined form also counts the combine's return, in the activation dtype.
  EXPECT_GE(pipelined_bytes, fp8_bytes);
}

// On a GPU (every rank on GPU 0, collectives staged through host memory): the plan's indices on
// the device, GatherRows for padding and regrouping, the same collectives; every result equals the
// CPU's bit for bit. Skips without a GPU.
TEST_P(TokenDispatcherTest, OnTheGpuEqualsTheCpuBitForBit) {
  const Layout l = GetParam();
  if (ops::CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU on this machine";
  if (l.routing != Routing::kRandom) GTEST_SKIP() << "the CPU cases cover the other routings";
  Rank cpu = MakeRank(l), gpu = MakeRank(l, CommBackend::kMpiHostStaged);
  const int rank = cpu.groups->world().rank();
  const Device device = Device::Cuda(0);
  Stream& stream = DefaultStream(device);
  const Routed in = Route(l, rank);
  const Tensor& permuted = in.permuted;
  const std::vector<int64_t>& c = in.counts;
  auto plan = BuildDispatchPlan(c, {.pad_to = l.pad_to, .chunks = l.chunks}, cpu.dispatch);
  auto plan_gpu =
      BuildDispatchPlan(c, {.pad_to = l.pad_to, .chunks = l.chunks, .stream = &stream},
                        gpu.dispatch);
  ASSERT_OK(plan);
  ASSERT_OK(plan_gpu);
  const Tensor permuted_gpu = permuted.To(device);

  Tensor grouped, grouped_gpu;
  ASSERT_OK(Dispatch(*plan, cpu.dispatch, permuted, &grouped, CpuStream()));
  ASSERT_OK(Dispatch(*plan_gpu, gpu.dispatch, permuted_gpu, &grouped_gpu, stream));
  EXPECT_EQ(grouped_gpu.device(), device);
  EXPECT_EQ(grouped_gpu.ToVector(), grouped.ToVector());
  const int first_expert = cpu.dispatch.ep_rank() * (kExperts / l.ep);
  const float etp = static_cast<float>(l.etp);
  const Tensor scaled = ScaleByExpert(grouped, plan->local_counts, first_expert, false, etp);
  Tensor back, back_gpu;
  ASSERT_OK(Combine(*plan, cpu.dispatch, scaled, &back, CpuStream()));
  ASSERT_OK(Combine(*plan_gpu, gpu.dispatch, scaled.To(device), &back_gpu, stream));
  EXPECT_EQ(back_gpu.device(), device);
  EXPECT_EQ(back_gpu.ToVector(), back.ToVector());

  auto experts = [&](const DispatchChunk& chunk, const Tensor& rows, Tensor* out,
                     const std::function<void()>& progress) {
    progress();
    out->CopyFrom(ScaleByExpert(rows.To(Device::Cpu()), chunk.local_counts,
                                first_expert + chunk.first_expert, false, etp));
    return absl::OkStatus();
  };
  Tensor pipelined_grouped, pipelined;
  ASSERT_OK(DispatchAndCombine(*plan_gpu, gpu.dispatch, permuted_gpu, experts, &pipelined_grouped,
                               &pipelined, stream));
  EXPECT_EQ(pipelined_grouped.ToVector(), grouped.ToVector());
  EXPECT_EQ(pipelined.ToVector(), back.ToVector());
}

INSTANTIATE_TEST_SUITE_P(Layouts, TokenDispatcherTest, ::testing::ValuesIn(Layouts()),
                         [](const auto& info) { return Name(info.param); });

TEST(TokenDispatcherPlanTest, RefusesExpertsThatDoNotSplitCountsOverCapacityAndNoChunks) {
  EXPECT_OK(BuildDispatchPlan({1, 2, 3}, {}, {}));  // E = 3 over ep 1 is fine
  const auto over = BuildDispatchPlan({1, 5}, {.pad_to = 4}, {});
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("expert 1 has 5 rows > capacity 4"), std::string::npos)
      << over.status();
  EXPECT_EQ(BuildDispatchPlan({1, 2}, {.chunks = 0}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TokenDispatcherPlanTest, OneRankUnpaddedIsTheIdentityInEveryChunk) {
  // Experts 0..3 with 2, 0, 3, 1 rows in three chunks (experts {0}, {1}, {2, 3}): no index is
  // needed, and the chunks are consecutive row ranges of the input.
  auto plan = BuildDispatchPlan({2, 0, 3, 1}, {.chunks = 3}, {});
  ASSERT_OK(plan);
  EXPECT_FALSE(plan->send_index.defined());
  EXPECT_FALSE(plan->unsend_index.defined());
  ASSERT_EQ(plan->chunks.size(), 3u);
  EXPECT_EQ(plan->chunks[1].first_expert, 1);
  EXPECT_EQ(plan->chunks[1].experts, 1);
  EXPECT_EQ(plan->chunks[1].grouped_offset, 2);
  EXPECT_EQ(plan->chunks[1].grouped_rows, 0);
  EXPECT_EQ(plan->chunks[2].experts, 2);
  EXPECT_EQ(plan->chunks[2].send_offset, 2);
  EXPECT_EQ(plan->chunks[2].grouped_rows, 4);
  for (const DispatchChunk& chunk : plan->chunks) EXPECT_FALSE(chunk.regroup.defined());
  // Padded to 3: the send layout holds each expert's block of 3, zero rows marked −1.
  auto padded = BuildDispatchPlan({2, 0, 3, 1}, {.pad_to = 3, .chunks = 2}, {});
  ASSERT_OK(padded);
  EXPECT_EQ(padded->send_index.ToVector(),
            (std::vector<float>{0, 1, -1, -1, -1, -1, 2, 3, 4, 5, -1, -1}));
  EXPECT_EQ(padded->unsend_index.ToVector(), (std::vector<float>{0, 1, 6, 7, 8, 9}));
  EXPECT_EQ(padded->grouped_rows(), 12);
}

TEST(TokenDispatcherPlanTest, OneRankPaddedOnlyAtTheEndCombinesToTheInputRows) {
  // Experts full to capacity but the last: the input rows keep their places in the send layout
  // (the unsend index is the identity) and only padding follows them. Combine must still return
  // the input's 5 rows, not the 6 padded ones.
  auto plan = BuildDispatchPlan({2, 2, 1}, {.pad_to = 2}, {});
  ASSERT_OK(plan);
  EXPECT_EQ(plan->send_index.ToVector(), (std::vector<float>{0, 1, 2, 3, 4, -1}));
  ASSERT_EQ(plan->grouped_rows(), 6);
  ASSERT_EQ(plan->rows(), 5);
  Stream& stream = CpuStream();
  Tensor rows = Tensor::Empty({5, 2}, DType::kF32);
  for (int64_t i = 0; i < rows.numel(); ++i) rows.data<float>()[i] = static_cast<float>(i);
  Tensor grouped, combined;
  const ChunkExperts copy = [](const DispatchChunk&, const Tensor& in, Tensor* out,
                               const std::function<void()>&) {
    std::copy(in.data<float>(), in.data<float>() + in.numel(), out->data<float>());
    return absl::OkStatus();
  };
  ASSERT_OK(DispatchAndCombine(*plan, {}, rows, copy, &grouped, &combined, stream, nullptr));
  EXPECT_EQ(grouped.dim(0), 6);
  ASSERT_EQ(combined.dim(0), 5);
  EXPECT_EQ(combined.ToVector(), rows.ToVector());
}

}  // namespace
}  // namespace moefold::parallel
