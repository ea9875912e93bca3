// The host-staged communicator under mpirun (2 and 4 ranks): every op through the staging path
// gives exactly what the MPI communicator gives. On the CPU the staging of host tensors is forced
// (stage_host_tensors), so the whole copy-in / copy-back path runs without a GPU; with a GPU the
// same checks run on device tensors, every rank sharing GPU 0 (they skip without one).
#include <numeric>

#include "gtest/gtest.h"
#include "ops/device_query.h"
#include "parallel/host_staged_communicator.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

std::vector<float> Iota(int64_t n, float start) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

class HostStagedTest : public ::testing::TestWithParam<bool> {  // param: on the GPU
 protected:
  void SetUp() override {
    if (gpu() && ops::CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU on this machine";
    auto mpi = std::make_unique<MpiCommunicator>(MpiCommunicator::World("world"));
    comm_ = std::make_unique<HostStagedCommunicator>(std::move(mpi),
                                                     /*stage_host_tensors=*/!gpu());
  }
  bool gpu() const { return GetParam(); }
  Device device() const { return gpu() ? Device::Cuda(0) : Device::Cpu(); }
  Tensor On(const Tensor& host) const { return host.To(device()); }
  // Poisoned output on the test's device: staging must overwrite all of it.
  Tensor Output(const Shape& shape) const {
    Tensor t = Tensor::Empty(shape, DType::kF32);
    t.Fill(-7777.0f);
    return On(t);
  }
  int rank() const { return comm_->rank(); }
  int size() const { return comm_->size(); }
  std::unique_ptr<HostStagedCommunicator> comm_;
};

TEST_P(HostStagedTest, AllReduceBroadcastAndTheirInPlaceResults) {
  Tensor t = On(Tensor::FromVector(Iota(5, static_cast<float>(rank())), {5}));
  ASSERT_OK(WaitFor(comm_->AllReduce(&t, {})));
  EXPECT_EQ(t.device(), device());
  const float ranks = static_cast<float>(size() * (size() - 1) / 2);
  EXPECT_EQ(t.ToVector(), (std::vector<float>{ranks, ranks + size(), ranks + 2 * size(),
                                              ranks + 3 * size(), ranks + 4 * size()}));
  Tensor m = On(Tensor::FromVector({static_cast<float>(rank())}, {1}));
  ASSERT_OK(WaitFor(comm_->AllReduce(&m, {.op = ReduceOp::kMax})));
  EXPECT_EQ(m.ToVector()[0], static_cast<float>(size() - 1));

  Tensor b = On(Tensor::FromVector(Iota(3, 10.0f * rank()), {3}));
  ASSERT_OK(WaitFor(comm_->Broadcast(&b, {.root = size() - 1})));
  EXPECT_EQ(b.ToVector(), Iota(3, 10.0f * (size() - 1)));
}

TEST_P(HostStagedTest, ReduceScatterAllGatherAndAllToAllV) {
  const int chunk = 3;
  const Tensor in = On(Tensor::FromVector(Iota(chunk * size(), 100.0f * rank()), {chunk * size()}));
  Tensor out = Output({chunk});
  ASSERT_OK(WaitFor(comm_->ReduceScatter(in, &out, {})));
  for (int j = 0; j < chunk; ++j) {
    EXPECT_EQ(out.ToVector()[j],
              100.0f * size() * (size() - 1) / 2 + static_cast<float>(size() * (rank() * chunk + j)));
  }
  Tensor gathered = Output({chunk * size()});
  ASSERT_OK(WaitFor(comm_->AllGather(On(Tensor::FromVector(Iota(chunk, 10.0f * rank()), {chunk})),
                                     &gathered, {})));
  for (int r = 0; r < size(); ++r) {
    for (int j = 0; j < chunk; ++j) EXPECT_EQ(gathered.ToVector()[r * chunk + j], 10.0f * r + j);
  }
  // Rank r sends r + 1 rows of width 2 to every peer, all of value 100·r + peer.
  std::vector<int64_t> send(size(), rank() + 1), recv(size());
  std::vector<float> rows;
  for (int p = 0; p < size(); ++p) {
    for (int i = 0; i < 2 * (rank() + 1); ++i) rows.push_back(100.0f * rank() + p);
  }
  for (int p = 0; p < size(); ++p) recv[p] = p + 1;
  const int64_t total = std::accumulate(recv.begin(), recv.end(), int64_t{0});
  Tensor a2a_out = Output({total, 2});
  ASSERT_OK(WaitFor(comm_->AllToAllV(On(Tensor::FromVector(rows, {size() * (rank() + 1), 2})),
                                     send, &a2a_out, recv, {})));
  const std::vector<float> got = a2a_out.ToVector();
  int64_t at = 0;
  for (int p = 0; p < size(); ++p) {
    for (int64_t i = 0; i < 2 * (p + 1); ++i) EXPECT_EQ(got[at++], 100.0f * p + rank()) << p;
  }
}

TEST_P(HostStagedTest, VariableSizeGatherAndReduceScatter) {
  // Member r holds r rows of 2 (member 0 none), each of value 10·r + row; the gather lists them in
  // member order. Then every member sends its gathered copy back as the reduce-scatter's input:
  // member r gets size × its own rows.
  std::vector<int64_t> rows(size());
  for (int r = 0; r < size(); ++r) rows[r] = r;
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  std::vector<float> mine;
  for (int i = 0; i < rank(); ++i) mine.insert(mine.end(), 2, 10.0f * rank() + i);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Tensor gathered = On(Tensor::Zeros({total, 2}, dtype));
    ASSERT_OK(WaitFor(comm_->AllGatherV(On(Tensor::FromVector(mine, {rank(), 2}).To(dtype)), rows,
                                        &gathered, {})));
    EXPECT_EQ(gathered.device(), device());
    const std::vector<float> got = gathered.ToVector();
    int64_t at = 0;
    for (int r = 0; r < size(); ++r) {
      for (int i = 0; i < r; ++i, at += 2) EXPECT_EQ(got[at], 10.0f * r + i) << r << " " << i;
    }
    Tensor summed = On(Tensor::Zeros({rank(), 2}, dtype));
    ASSERT_OK(WaitFor(comm_->ReduceScatterV(gathered, rows, &summed, {})));
    const std::vector<float> sums = summed.ToVector();
    for (int i = 0; i < rank(); ++i) {
      EXPECT_EQ(sums[2 * i], RoundTrip(size() * (10.0f * rank() + i), dtype)) << i;
    }
  }
}

TEST_P(HostStagedTest, SendAndRecvAroundARing) {
  const int next = (rank() + 1) % size(), prev = (rank() + size() - 1) % size();
  Tensor received = Output({4});
  auto recv = comm_->Recv(&received, prev, {.tag = 3});
  ASSERT_OK(recv.status());
  ASSERT_OK(WaitFor(comm_->Send(On(Tensor::FromVector(Iota(4, 1000.0f * rank()), {4})), next,
                                {.tag = 3})));
  ASSERT_OK((*recv)->Wait());
  EXPECT_EQ(received.ToVector(), Iota(4, 1000.0f * prev));
  ASSERT_OK(WaitFor(comm_->Barrier({})));
}

TEST_P(HostStagedTest, ErrorsOfTheBackendComeThroughUnchanged) {
  Tensor f8 = On(Tensor::Zeros({4}, DType::kFp8E4M3));
  EXPECT_EQ(comm_->AllReduce(&f8, {}).status().code(), absl::StatusCode::kUnimplemented);
  Tensor x = Output({2});
  EXPECT_EQ(comm_->Broadcast(&x, {.root = size()}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Devices, HostStagedTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Gpu" : "Cpu"; });

TEST(HostStagedProcessGroupsTest, EveryGroupOfTheMappingIsStaged) {
  auto mapping = Mapping::Create(MpiCommunicator::World("w").size(), {});
  ASSERT_OK(mapping.status());
  auto groups = ProcessGroups::Create(*mapping, {.backend = CommBackend::kMpiHostStaged});
  ASSERT_OK(groups.status());
  EXPECT_EQ((*groups)->backend(), CommBackend::kMpiHostStaged);
  EXPECT_NE(dynamic_cast<HostStagedCommunicator*>(Untimed(&(*groups)->world())), nullptr);
  auto dp = (*groups)->Get(GroupKind::kDp);
  ASSERT_OK(dp.status());
  EXPECT_NE(dynamic_cast<HostStagedCommunicator*>(Untimed(*dp)), nullptr);
  Tensor t = Tensor::FromVector({1.0f}, {1});
  ASSERT_OK(WaitFor((*dp)->AllReduce(&t, {})));  // a CPU tensor passes straight through
  EXPECT_EQ(t.ToVector()[0], static_cast<float>((*dp)->size()));
}

}  // namespace
}  // namespace moefold::parallel
