// The MPI communicator under mpirun (2, 3, 4 and 8 ranks): every op and dtype, odd sizes, zero-size
// pieces in all_to_all_v and the variable-size all-gather and reduce-scatter (whose sum follows
// member order, bf16 in f32), reduce ops, bad arguments with their numbers, splits, and a
// deliberately hung peer turning into a timeout error that names the op, the group and the ranks
// (run last).
#include <chrono>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

class CommunicatorTest : public ::testing::Test {
 protected:
  CommunicatorTest() : comm_(MpiCommunicator::World("world")) {}
  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  MpiCommunicator comm_;
};

TEST_F(CommunicatorTest, AllReduceEveryDtypeAndOp) {
  const int n = 7;  // odd on purpose
  // f32 sum, max, min.
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) {
    std::vector<float> v(n);
    for (int i = 0; i < n; ++i) v[i] = static_cast<float>((rank() + 1) * (i + 1));
    Tensor t = Tensor::FromVector(v, {n});
    ASSERT_OK(WaitFor(comm_.AllReduce(&t, {.op = op})));
    for (int i = 0; i < n; ++i) {
      const float sum = static_cast<float>(size() * (size() + 1) / 2 * (i + 1));
      const float expected = op == ReduceOp::kSum   ? sum
                             : op == ReduceOp::kMax ? static_cast<float>(size() * (i + 1))
                                                    : static_cast<float>(i + 1);
      EXPECT_EQ(t.ToVector()[i], expected) << ReduceOpName(op) << " " << i;
    }
  }
  // bf16: summed in f32 and rounded once at the end. Rank 0 holds 256 (bf16 spacing 2 there), the
  // others 1: a bf16 accumulator would drop each 1 (256 + 1 rounds back to 256); f32 keeps them.
  Tensor b =
      Tensor::FromVector(std::vector<float>(n, rank() == 0 ? 256.0f : 1.0f), {n}).To(DType::kBF16);
  ASSERT_OK(WaitFor(comm_.AllReduce(&b, {})));
  const float expected = RoundTrip(256.0f + static_cast<float>(size() - 1), DType::kBF16);
  for (int i = 0; i < n; ++i) EXPECT_EQ(b.ToVector()[i], expected) << i;
  if (size() >= 3) {
    EXPECT_GT(b.ToVector()[0], 256.0f);  // the ones were not lost
  }
  Tensor half = Tensor::FromVector(std::vector<float>(n, 0.5f + rank()), {n}).To(DType::kF16);
  ASSERT_OK(WaitFor(comm_.AllReduce(&half, {})));
  EXPECT_EQ(half.ToVector()[1], 0.5f * size() + size() * (size() - 1) / 2.0f);
  // Integers.
  Tensor i32 = Tensor::FromVectorI32(std::vector<int32_t>(n, rank()), {n});
  ASSERT_OK(WaitFor(comm_.AllReduce(&i32, {})));
  EXPECT_EQ(i32.data<int32_t>()[6], size() * (size() - 1) / 2);
  Tensor i64 = Tensor::Zeros({3}, DType::kI64);
  i64.data<int64_t>()[0] = int64_t{1} << 40;
  ASSERT_OK(WaitFor(comm_.AllReduce(&i64, {})));
  EXPECT_EQ(i64.data<int64_t>()[0], size() * (int64_t{1} << 40));
  // fp8 has no meaningful sum: refused.
  Tensor f8 = Tensor::Zeros({4}, DType::kFp8E4M3);
  EXPECT_EQ(comm_.AllReduce(&f8, {}).status().code(), absl::StatusCode::kUnimplemented);
}

TEST_F(CommunicatorTest, ReduceScatterAndAllGather) {
  const int chunk = 3;
  std::vector<float> in(chunk * size());
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(rank() * 100 + i);
  Tensor out = Tensor::Empty({chunk}, DType::kF32);
  ASSERT_OK(WaitFor(comm_.ReduceScatter(Tensor::FromVector(in, {chunk * size()}), &out, {})));
  for (int j = 0; j < chunk; ++j) {
    const int i = rank() * chunk + j;
    EXPECT_EQ(out.ToVector()[j], static_cast<float>(100 * size() * (size() - 1) / 2 + size() * i));
  }
  // bf16 reduce-scatter goes through f32 too.
  Tensor out16 = Tensor::Empty({chunk}, DType::kBF16);
  ASSERT_OK(WaitFor(comm_.ReduceScatter(
      Tensor::FromVector(std::vector<float>(chunk * size(), 1.5f), {chunk * size()})
          .To(DType::kBF16),
      &out16, {})));
  EXPECT_EQ(out16.ToVector()[0], 1.5f * size());
  // All-gather of u8 (byte-wise movement works for any dtype).
  Tensor mine = Tensor::Empty({2}, DType::kU8);
  mine.data<uint8_t>()[0] = static_cast<uint8_t>(rank());
  mine.data<uint8_t>()[1] = static_cast<uint8_t>(rank() + 10);
  Tensor all = Tensor::Empty({2 * size()}, DType::kU8);
  ASSERT_OK(WaitFor(comm_.AllGather(mine, &all, {})));
  for (int r = 0; r < size(); ++r) {
    EXPECT_EQ(all.data<uint8_t>()[2 * r], r);
    EXPECT_EQ(all.data<uint8_t>()[2 * r + 1], r + 10);
  }
  // Sizes that do not fit are refused with the numbers.
  const int odd = chunk * size() + 1;
  Tensor wrong = Tensor::Empty({chunk}, DType::kF32);
  auto bad = comm_.ReduceScatter(Tensor::Zeros({odd}, DType::kF32), &wrong, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(absl::StrCat("reduce_scatter on group 'world'")),
            absl::string_view::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find(absl::StrCat("input has ", odd,
                                                     " elements, expected group "
                                                     "size ",
                                                     size(), " × output 3 = ", odd - 1)),
            absl::string_view::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find(absl::StrCat(odd, " is not divisible by ", size())),
            absl::string_view::npos)
      << bad.status();
  auto bad_gather = comm_.AllGather(mine, &wrong, {});
  EXPECT_EQ(bad_gather.status().code(), absl::StatusCode::kInvalidArgument);  // dtype differs
  EXPECT_NE(bad_gather.status().message().find("differ in dtype"), absl::string_view::npos);
  Tensor short_u8 = Tensor::Empty({2 * size() - 1}, DType::kU8);
  bad_gather = comm_.AllGather(mine, &short_u8, {});
  EXPECT_NE(
      bad_gather.status().message().find(absl::StrCat(
          "output has ", 2 * size() - 1, " elements, expected group size ", size(), " × input 2")),
      absl::string_view::npos)
      << bad_gather.status();
}

TEST_F(CommunicatorTest, MovementIsBytewiseForEveryDtype) {
  // bf16 and fp8 bit patterns survive an all-gather untouched (no conversion on the way).
  Tensor mine = Tensor::FromVector({1.0f + rank(), -0.375f}, {2}).To(DType::kBF16);
  Tensor all = Tensor::Empty({2 * size()}, DType::kBF16);
  ASSERT_OK(WaitFor(comm_.AllGather(mine, &all, {})));
  for (int r = 0; r < size(); ++r) {
    EXPECT_EQ(all.ToVector()[2 * r], 1.0f + r);
    EXPECT_EQ(all.ToVector()[2 * r + 1], -0.375f);
  }
  Tensor f8 = Tensor::FromVector({0.5f * (rank() + 1)}, {1}).To(DType::kFp8E4M3);
  Tensor f8_all = Tensor::Empty({size()}, DType::kFp8E4M3);
  ASSERT_OK(WaitFor(comm_.AllGather(f8, &f8_all, {})));
  for (int r = 0; r < size(); ++r) EXPECT_EQ(f8_all.ToVector()[r], 0.5f * (r + 1));
  // i64 broadcast from the last member: values beyond 32 bits arrive whole.
  Tensor big = Tensor::Zeros({2}, DType::kI64);
  big.data<int64_t>()[0] = (int64_t{1} << 40) + rank();
  big.data<int64_t>()[1] = -rank();
  ASSERT_OK(WaitFor(comm_.Broadcast(&big, {.root = size() - 1})));
  EXPECT_EQ(big.data<int64_t>()[0], (int64_t{1} << 40) + size() - 1);
  EXPECT_EQ(big.data<int64_t>()[1], -(size() - 1));
}

TEST_F(CommunicatorTest, IsCompletedPollsAndFinishesTheF32Round) {
  // A bf16 all-reduce polled with IsCompleted (no Wait) must leave the rounded result in place.
  Tensor t = Tensor::FromVector({1.5f, 2.0f + rank()}, {2}).To(DType::kBF16);
  auto work = comm_.AllReduce(&t, {});
  ASSERT_OK(work.status());
  const auto start = std::chrono::steady_clock::now();
  while (!(*work)->IsCompleted()) {
    ASSERT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  }
  EXPECT_EQ(t.ToVector()[0], 1.5f * size());
  EXPECT_EQ(t.ToVector()[1], RoundTrip(2.0f * size() + size() * (size() - 1) / 2.0f, DType::kBF16));
  ASSERT_OK((*work)->Wait());  // idempotent after completion
  EXPECT_EQ(t.ToVector()[0], 1.5f * size());
}

TEST_F(CommunicatorTest, AllToAllVWithZeroSizedPieces) {
  // Rank r sends (r + d) % 3 rows to rank d (some zero), rows of 2 elements tagged (sender, dest,
  // k). Rank 1 sends nothing at all; rank 0 receives nothing at all.
  auto rows_from_to = [&](int s, int d) -> int64_t {
    if (s == 1 || d == 0) return 0;
    return (s + d) % 3;
  };
  std::vector<int64_t> send(size()), recv(size());
  std::vector<float> data;
  for (int d = 0; d < size(); ++d) {
    send[d] = rows_from_to(rank(), d);
    recv[d] = rows_from_to(d, rank());
    for (int k = 0; k < send[d]; ++k) {
      data.push_back(static_cast<float>(rank() * 100 + d * 10 + k));
      data.push_back(-1.0f);
    }
  }
  const int64_t in_rows = std::accumulate(send.begin(), send.end(), int64_t{0});
  const int64_t out_rows = std::accumulate(recv.begin(), recv.end(), int64_t{0});
  Tensor input = Tensor::FromVector(data, {in_rows, 2});
  Tensor output = Tensor::Empty({out_rows, 2}, DType::kF32);
  ASSERT_OK(WaitFor(comm_.AllToAllV(input, send, &output, recv, {})));
  int64_t row = 0;
  for (int s = 0; s < size(); ++s) {
    for (int k = 0; k < recv[s]; ++k, ++row) {
      EXPECT_EQ(output.ToVector()[2 * row], static_cast<float>(s * 100 + rank() * 10 + k));
    }
  }
  // Counts that do not add up to the tensors, negative counts and rows of another width are
  // refused with the numbers.
  std::vector<int64_t> too_many = send;
  too_many[0] += 1;
  auto bad = comm_.AllToAllV(input, too_many, &output, recv, {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(absl::StrCat("send counts sum to ", in_rows + 1)),
            absl::string_view::npos)
      << bad.status();
  std::vector<int64_t> negative = send;
  negative[size() - 1] = -1;
  bad = comm_.AllToAllV(input, negative, &output, recv, {});
  EXPECT_NE(bad.status().message().find(
                absl::StrCat("negative row count for member ", size() - 1, " (send -1")),
            absl::string_view::npos)
      << bad.status();
  Tensor wide = Tensor::Empty({out_rows, 3}, DType::kF32);
  bad = comm_.AllToAllV(input, send, &wide, recv, {});
  EXPECT_NE(bad.status().message().find("differ"), absl::string_view::npos) << bad.status();
  bad = comm_.AllToAllV(input, {0}, &output, recv, {});
  EXPECT_NE(bad.status().message().find(absl::StrCat("1 send and ", size(), " receive counts")),
            absl::string_view::npos)
      << bad.status();
}

TEST_F(CommunicatorTest, AllToAllVOfInt64RowsInEveryDirection) {
  // Every member sends one row of 3 i64 (sender, dest, 2^35) to every member, itself included.
  std::vector<int64_t> ones(size(), 1);
  Tensor input = Tensor::Zeros({size(), 3}, DType::kI64);
  for (int d = 0; d < size(); ++d) {
    input.data<int64_t>()[3 * d] = rank();
    input.data<int64_t>()[3 * d + 1] = d;
    input.data<int64_t>()[3 * d + 2] = int64_t{1} << 35;
  }
  Tensor output = Tensor::Zeros({size(), 3}, DType::kI64);
  ASSERT_OK(WaitFor(comm_.AllToAllV(input, ones, &output, ones, {})));
  for (int s = 0; s < size(); ++s) {
    EXPECT_EQ(output.data<int64_t>()[3 * s], s);
    EXPECT_EQ(output.data<int64_t>()[3 * s + 1], rank());
    EXPECT_EQ(output.data<int64_t>()[3 * s + 2], int64_t{1} << 35);
  }
}

TEST_F(CommunicatorTest, AllGatherVWithUnevenAndZeroCounts) {
  // Member r holds r % 3 rows of 3 (member 0, 3, ... none), tagged (member, row, column).
  std::vector<int64_t> rows(size());
  for (int r = 0; r < size(); ++r) rows[r] = r % 3;
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  std::vector<float> mine;
  for (int i = 0; i < rows[rank()]; ++i) {
    for (int h = 0; h < 3; ++h) mine.push_back(static_cast<float>(rank() * 100 + i * 10 + h));
  }
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Tensor input = Tensor::FromVector(mine, {rows[rank()], 3}).To(dtype);
    Tensor output = Tensor::Empty({total, 3}, dtype);
    ASSERT_OK(WaitFor(comm_.AllGatherV(input, rows, &output, {})));
    const std::vector<float> got = output.ToVector();
    int64_t row = 0;
    for (int r = 0; r < size(); ++r) {
      for (int i = 0; i < rows[r]; ++i, ++row) {
        for (int h = 0; h < 3; ++h) {
          EXPECT_EQ(got[row * 3 + h], RoundTrip(static_cast<float>(r * 100 + i * 10 + h), dtype))
              << DTypeName(dtype) << " member " << r << " row " << i;
        }
      }
    }
  }
  // i64 rows arrive whole (byte-wise movement).
  Tensor big = Tensor::Zeros({1, 2}, DType::kI64);
  big.data<int64_t>()[0] = (int64_t{1} << 40) + rank();
  Tensor all = Tensor::Zeros({size(), 2}, DType::kI64);
  ASSERT_OK(WaitFor(comm_.AllGatherV(big, std::vector<int64_t>(size(), 1), &all, {})));
  for (int r = 0; r < size(); ++r) EXPECT_EQ(all.data<int64_t>()[2 * r], (int64_t{1} << 40) + r);
  // Counts that do not match the tensors are refused with the numbers.
  const Tensor input = Tensor::Zeros({rows[rank()] + 1, 3}, DType::kF32);
  Tensor output = Tensor::Empty({total, 3}, DType::kF32);
  auto bad = comm_.AllGatherV(input, rows, &output, {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(absl::StrCat("all_gather_v on group 'world'")),
            absl::string_view::npos)
      << bad.status();
  EXPECT_NE(bad.status().message().find(absl::StrCat("member ", rank(), "'s ", rows[rank()],
                                                     " rows and ", total, " rows in all")),
            absl::string_view::npos)
      << bad.status();
  bad = comm_.AllGatherV(input, {1}, &output, {});
  EXPECT_NE(bad.status().message().find(absl::StrCat("1 row counts for ", size(), " members")),
            absl::string_view::npos)
      << bad.status();
}

TEST_F(CommunicatorTest, ReduceScatterVAddsThePiecesInMemberOrder) {
  // Member r receives rows[r] = (r + 1) % 3 rows of 2 (some members none). Sender s's block for
  // member r: element 0 is 1e8, 1 or −1e8 by s % 3 (so the order of the sum matters in f32),
  // element 1 is s + 10·r + row.
  std::vector<int64_t> rows(size());
  for (int r = 0; r < size(); ++r) rows[r] = (r + 1) % 3;
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  auto first = [](int s) { return s % 3 == 0 ? 1e8f : s % 3 == 1 ? 1.0f : -1e8f; };
  std::vector<float> in;
  for (int r = 0; r < size(); ++r) {
    for (int i = 0; i < rows[r]; ++i) {
      in.push_back(first(rank()));
      in.push_back(static_cast<float>(rank() + 10 * r + i));
    }
  }
  Tensor output = Tensor::Empty({rows[rank()], 2}, DType::kF32);
  ASSERT_OK(WaitFor(comm_.ReduceScatterV(Tensor::FromVector(in, {total, 2}), rows, &output, {})));
  for (int i = 0; i < rows[rank()]; ++i) {
    float sum0 = first(0), sum1 = static_cast<float>(10 * rank() + i);
    for (int s = 1; s < size(); ++s) {
      sum0 += first(s);
      sum1 += static_cast<float>(s + 10 * rank() + i);
    }
    EXPECT_EQ(output.ToVector()[2 * i], sum0) << "row " << i;
    EXPECT_EQ(output.ToVector()[2 * i + 1], sum1) << "row " << i;
  }
  // bf16: summed in f32, rounded once. Member 0 sends 256 (bf16 spacing 2), the others 1.
  std::vector<float> ones(total * 2, rank() == 0 ? 256.0f : 1.0f);
  Tensor out16 = Tensor::Empty({rows[rank()], 2}, DType::kBF16);
  ASSERT_OK(WaitFor(comm_.ReduceScatterV(Tensor::FromVector(ones, {total, 2}).To(DType::kBF16),
                                         rows, &out16, {})));
  for (float v : out16.ToVector()) {
    EXPECT_EQ(v, RoundTrip(256.0f + static_cast<float>(size() - 1), DType::kBF16));
  }
  // Integers have no f32 sum here; counts that do not match are refused with the numbers.
  Tensor i32_out = Tensor::Empty({rows[rank()], 2}, DType::kI32);
  EXPECT_EQ(comm_.ReduceScatterV(Tensor::Zeros({total, 2}, DType::kI32), rows, &i32_out, {})
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
  auto bad = comm_.ReduceScatterV(Tensor::Zeros({total + 1, 2}, DType::kF32), rows, &output, {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(absl::StrCat("reduce_scatter_v on group 'world'")),
            absl::string_view::npos)
      << bad.status();
  std::vector<int64_t> negative = rows;
  negative[0] = -1;
  bad = comm_.ReduceScatterV(Tensor::Zeros({total, 2}, DType::kF32), negative, &output, {});
  EXPECT_NE(bad.status().message().find("negative row count -1 for member 0"),
            absl::string_view::npos)
      << bad.status();
}

TEST_F(CommunicatorTest, BroadcastSendRecvBarrier) {
  const int root = size() - 1;
  Tensor t = Tensor::FromVector({static_cast<float>(rank()), 5.0f}, {2});
  ASSERT_OK(WaitFor(comm_.Broadcast(&t, {.root = root})));
  EXPECT_EQ(t.ToVector()[0], static_cast<float>(root));
  // A ring: send to the next rank, receive from the previous one.
  Tensor out = Tensor::FromVectorI32({rank() * 7}, {1});
  Tensor in = Tensor::Empty({1}, DType::kI32);
  auto recv = comm_.Recv(&in, (rank() + size() - 1) % size(), {.tag = 3});
  auto send = comm_.Send(out, (rank() + 1) % size(), {.tag = 3});
  ASSERT_OK(WaitFor(std::move(send)));
  ASSERT_OK(WaitFor(std::move(recv)));
  EXPECT_EQ(in.data<int32_t>()[0], ((rank() + size() - 1) % size()) * 7);
  ASSERT_OK(WaitFor(comm_.Barrier({})));
  auto bad = comm_.Broadcast(&t, {.root = size()});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(
                absl::StrCat("root ", size(), " is not a member of a group of ", size())),
            absl::string_view::npos)
      << bad.status();
  EXPECT_EQ(comm_.Send(out, -1, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(comm_.Recv(&in, size(), {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CommunicatorTest, SplitAndDupKeepWorldRanks) {
  // Even and odd world ranks form two groups; each lists its members' world ranks in key order.
  auto half = comm_.Split(rank() % 2, rank(), "parity");
  ASSERT_OK(half.status());
  std::vector<int> expected;
  for (int r = rank() % 2; r < size(); r += 2) expected.push_back(r);
  EXPECT_EQ((*half)->world_ranks(), expected);
  EXPECT_EQ((*half)->name(), "parity");
  Tensor t = Tensor::FromVectorI32({rank()}, {1});
  ASSERT_OK(WaitFor((*half)->AllReduce(&t, {})));
  EXPECT_EQ(t.data<int32_t>()[0], std::accumulate(expected.begin(), expected.end(), 0));
  auto dup = (*half)->Dup("parity-copy");
  ASSERT_OK(dup.status());
  EXPECT_EQ((*dup)->world_ranks(), expected);
  // A member passing MPI_UNDEFINED joins no group: NotFound, while the others get theirs.
  auto some = comm_.Split(rank() == 0 ? MPI_UNDEFINED : 0, rank(), "all-but-0");
  if (rank() == 0) {
    EXPECT_EQ(some.status().code(), absl::StatusCode::kNotFound) << some.status();
  } else {
    ASSERT_OK(some.status());
    EXPECT_EQ((*some)->size(), size() - 1);
  }
}

TEST_F(CommunicatorTest, AHungPeerBecomesATimeoutNamingOpGroupAndRanks) {
  // Rank 0 enters an all-reduce that the others join only after it gave up: the wait must fail
  // with DeadlineExceeded instead of hanging. A private communicator keeps the late traffic apart.
  MpiCommunicator hang = MpiCommunicator::World("hang-test");
  Tensor t = Tensor::FromVector({1.0f}, {1});
  if (rank() == 0) {
    auto work = hang.AllReduce(&t, {.timeout = std::chrono::milliseconds(300)});
    ASSERT_TRUE(work.ok());
    const absl::Status s = (*work)->Wait();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_NE(s.message().find("all_reduce on group 'hang-test' (world ranks 0, 1"),
              absl::string_view::npos)
        << s;
    EXPECT_NE(s.message().find("timed out after 0.3 s"), absl::string_view::npos) << s;
    // Tell the others to join now so nothing stays pending, then complete the collective.
    ASSERT_OK(WaitFor(comm_.Barrier({})));
    ASSERT_OK((*work)->Wait());
  } else {
    ASSERT_OK(WaitFor(comm_.Barrier({})));
    ASSERT_OK(WaitFor(hang.AllReduce(&t, {})));
  }
}

}  // namespace
}  // namespace moefold::parallel
