// The MPI communicator under mpirun (2, 3 and 4 ranks): every op and dtype, odd sizes, zero-size
// pieces in all_to_all_v, reduce ops, bad arguments, and a deliberately hung peer turning into a
// timeout error that names the op, the group and the ranks.
#include "parallel/mpi_communicator.h"

#include <cmath>
#include <numeric>

#include "gtest/gtest.h"
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
  // bf16: summed in f32 and rounded once at the end (1 + 2^-7 is exact in bf16; the sum is not).
  Tensor b = Tensor::FromVector(std::vector<float>(n, 1.0f + 1.0f / 128), {n}).To(DType::kBF16);
  Tensor big = Tensor::FromVector(std::vector<float>(n, 256.0f), {n}).To(DType::kBF16);
  ASSERT_OK(WaitFor(comm_.AllReduce(&b, {})));
  const float expected = RoundTrip(size() * (1.0f + 1.0f / 128), DType::kBF16);
  EXPECT_EQ(b.ToVector()[3], expected);
  ASSERT_OK(WaitFor(comm_.AllReduce(&big, {})));
  EXPECT_EQ(big.ToVector()[0], 256.0f * size());
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
      Tensor::FromVector(std::vector<float>(chunk * size(), 1.5f), {chunk * size()}).To(DType::kBF16),
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
  Tensor wrong = Tensor::Empty({chunk + 1}, DType::kF32);
  auto bad = comm_.ReduceScatter(Tensor::FromVector(in, {chunk * size()}), &wrong, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("group size"), absl::string_view::npos) << bad.status();
}

TEST_F(CommunicatorTest, AllToAllVWithZeroSizedPieces) {
  // Rank r sends (r + d) % 3 rows to rank d (some zero), rows of 2 elements tagged (sender, dest, k).
  // Rank 1 sends nothing at all; rank 0 receives nothing at all.
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
  // Counts that do not add up to the tensors are refused.
  std::vector<int64_t> too_many = send;
  too_many[0] += 1;
  EXPECT_EQ(comm_.AllToAllV(input, too_many, &output, recv, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
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
  EXPECT_EQ(comm_.Broadcast(&t, {.root = size()}).status().code(),
            absl::StatusCode::kInvalidArgument);
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
