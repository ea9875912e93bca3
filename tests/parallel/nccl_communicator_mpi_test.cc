// The NCCL communicator on a GPU (one rank): skips cleanly without one (CI compiles it). With a GPU
// it bootstraps over MPI, stages host tensors through the device for collectives and refuses them
// for point-to-point, refuses bad roots/peers and fp8 sums with clear messages, runs a barrier, and
// ProcessGroups builds every group on NCCL, setting each up on its first op (a failed set-up names
// the group). Data-carrying ops on device tensors (one member, so
// each is a copy or the identity) check the pointers, sizes and dtypes NCCL is given, and that an
// op waits for the default stream's work before it reads its input.
#include "gtest/gtest.h"
#include "ops/device_query.h"
#include "parallel/nccl_communicator.h"
#include "parallel/process_groups.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

TEST(NcclCommunicatorTest, OneRankBootstrapsRefusesBadCallsAndRunsABarrier) {
  if (ops::CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU on this machine";
  MpiCommunicator world = MpiCommunicator::World("world");
  if (world.size() != 1) GTEST_SKIP() << "one GPU holds one NCCL rank";
  auto nccl = NcclCommunicator::Create(world, /*device=*/0);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  NcclCommunicator& comm = **nccl;
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.name(), "world");
  EXPECT_EQ(comm.world_ranks(), std::vector<int>{0});
  // Collectives stage host tensors (a GPU step's statistics) through the device; point-to-point
  // refuses them by name.
  Tensor host = Tensor::FromVector({1.5f, -2.0f, 3.0f, 0.25f}, {4});
  ASSERT_OK(WaitFor(comm.AllReduce(&host, {})));
  EXPECT_EQ(host.ToVector(), (std::vector<float>{1.5f, -2.0f, 3.0f, 0.25f}));
  EXPECT_TRUE(host.device().is_cpu());
  Tensor gathered = Tensor::Zeros({4}, DType::kF32);
  ASSERT_OK(WaitFor(comm.AllGather(host, &gathered, {})));
  EXPECT_EQ(gathered.ToVector(), host.ToVector());
  auto refused = comm.Send(host, 0, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("send to 0 on group 'world' (world ranks 0, NCCL)"),
            absl::string_view::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("takes GPU tensors"), absl::string_view::npos);
  // Empty tensors carry no device; the argument checks still run before anything is enqueued.
  Tensor empty = Tensor::Empty({0}, DType::kFp8E4M3);
  EXPECT_EQ(comm.AllReduce(&empty, {}).status().code(), absl::StatusCode::kUnimplemented);
  Tensor empty_f32 = Tensor::Empty({0}, DType::kF32);
  auto bad_root = comm.Broadcast(&empty_f32, {.root = 1});
  EXPECT_NE(bad_root.status().message().find("root 1 is not a member of a group of 1"),
            absl::string_view::npos)
      << bad_root.status();
  EXPECT_EQ(comm.Send(empty_f32, 1, {}).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_OK(WaitFor(comm.Barrier({})));
  ASSERT_OK(WaitFor(comm.Barrier({})));
}

TEST(NcclCommunicatorTest, OneRankDataOpsOnDeviceTensors) {
  if (ops::CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU on this machine";
  MpiCommunicator world = MpiCommunicator::World("world");
  if (world.size() != 1) GTEST_SKIP() << "one GPU holds one NCCL rank";
  auto nccl = NcclCommunicator::Create(world, /*device=*/0);
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  NcclCommunicator& comm = **nccl;
  const Device gpu = Device::Cuda(0);
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 4.0f, -0.5f, 6.0f};

  // The input is written on the default stream just before the op: without the ordering the
  // all-reduce could read the old zeros.
  Tensor t = Tensor::Zeros({6}, DType::kF32, gpu);
  t.CopyFromAsync(Tensor::FromVector(values, {6}), DefaultStream(gpu));
  ASSERT_OK(WaitFor(comm.AllReduce(&t, {})));
  EXPECT_EQ(t.ToVector(), values);
  Tensor bf = Tensor::FromVector(values, {6}).To(DType::kBF16).To(gpu);
  ASSERT_OK(WaitFor(comm.AllReduce(&bf, {.op = ReduceOp::kMax})));
  EXPECT_EQ(bf.ToVector(), values);  // all exact in bf16
  Tensor i64 = Tensor::Zeros({2}, DType::kI64);
  i64.data<int64_t>()[1] = int64_t{1} << 40;
  Tensor i64_gpu = i64.To(gpu);
  ASSERT_OK(WaitFor(comm.AllReduce(&i64_gpu, {})));
  EXPECT_EQ(i64_gpu.To(Device::Cpu()).data<int64_t>()[1], int64_t{1} << 40);

  const Tensor in = Tensor::FromVector(values, {3, 2}).To(gpu);
  Tensor out = Tensor::Zeros({3, 2}, DType::kF32, gpu);
  ASSERT_OK(WaitFor(comm.ReduceScatter(in, &out, {})));
  EXPECT_EQ(out.ToVector(), values);
  out.SetZero();
  ASSERT_OK(WaitFor(comm.AllGather(in, &out, {})));
  EXPECT_EQ(out.ToVector(), values);
  out.SetZero();
  ASSERT_OK(WaitFor(comm.AllToAllV(in, {3}, &out, {3}, {})));
  EXPECT_EQ(out.ToVector(), values);
  Tensor empty_out = Tensor::Zeros({0, 2}, DType::kF32, gpu);
  ASSERT_OK(WaitFor(comm.AllToAllV(in.Slice(0, 0), {0}, &empty_out, {0}, {})));  // nothing sent
  Tensor b = in.Clone();
  ASSERT_OK(WaitFor(comm.Broadcast(&b, {.root = 0})));
  EXPECT_EQ(b.ToVector(), values);
  // The variable-size gather and reduce-scatter (one member: copies; the sum on the communicator's
  // stream), in both dtypes they take, and with no rows.
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Tensor typed = Tensor::FromVector(values, {3, 2}).To(dtype).To(gpu);
    Tensor typed_out = Tensor::Zeros({3, 2}, dtype, gpu);
    ASSERT_OK(WaitFor(comm.AllGatherV(typed, {3}, &typed_out, {})));
    EXPECT_EQ(typed_out.ToVector(), values);
    typed_out.SetZero();
    ASSERT_OK(WaitFor(comm.ReduceScatterV(typed, {3}, &typed_out, {})));
    EXPECT_EQ(typed_out.ToVector(), values);
    Tensor none = Tensor::Zeros({0, 2}, dtype, gpu);
    ASSERT_OK(WaitFor(comm.AllGatherV(typed.Slice(0, 0), {0}, &none, {})));
    ASSERT_OK(WaitFor(comm.ReduceScatterV(typed.Slice(0, 0), {0}, &none, {})));
  }
  Tensor host_out = Tensor::Zeros({3, 2}, DType::kF32);
  EXPECT_EQ(comm.AllGatherV(Tensor::FromVector(values, {3, 2}), {3}, &host_out, {}).status().code(),
            absl::StatusCode::kInvalidArgument);  // GPU tensors only
}

TEST(NcclCommunicatorTest, ProcessGroupsOnNcclSetUpEachGroupOnItsFirstOp) {
  if (ops::CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU on this machine";
  if (MpiCommunicator::World().size() != 1) GTEST_SKIP() << "one GPU holds one NCCL rank";
  auto mapping = Mapping::Create(1, {});
  ASSERT_TRUE(mapping.ok());
  auto groups = ProcessGroups::Create(*mapping, {.backend = CommBackend::kNccl, .device = 0});
  ASSERT_TRUE(groups.ok()) << groups.status();
  auto dp = (*groups)->Get(GroupKind::kDpCp);
  auto tp = (*groups)->Get(GroupKind::kTp);
  ASSERT_TRUE(dp.ok()) << dp.status();
  ASSERT_TRUE(tp.ok()) << tp.status();
  EXPECT_EQ((*dp)->name(), "dp-cp");
  auto* dp_nccl = dynamic_cast<NcclCommunicator*>(Untimed(*dp));
  auto* tp_nccl = dynamic_cast<NcclCommunicator*>(Untimed(*tp));
  ASSERT_NE(dp_nccl, nullptr);
  ASSERT_NE(tp_nccl, nullptr);
  EXPECT_FALSE(dp_nccl->is_set_up());
  ASSERT_OK(WaitFor((*dp)->Barrier({})));
  EXPECT_TRUE(dp_nccl->is_set_up());
  EXPECT_FALSE(tp_nccl->is_set_up());  // never used: never set up
  ASSERT_OK(WaitFor((*groups)->world().Barrier({})));
  // Both barriers were timed, under their groups' names.
  DefaultStream(Device::Cuda(0)).Synchronize();
  auto times = (*groups)->TakeCommTimes();
  ASSERT_OK(times.status());
  EXPECT_EQ(times->at("dp-cp").ops, 1);
  EXPECT_EQ(times->at("world").ops, 1);
  EXPECT_GT(times->at("dp-cp").total_s, 0);
  EXPECT_LE(times->at("dp-cp").exposed_s, times->at("dp-cp").total_s);
}

TEST(NcclCommunicatorTest, ALazySetUpThatFailsNamesTheGroupAndFailsEveryLaterOp) {
  if (ops::CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU on this machine";
  MpiCommunicator world = MpiCommunicator::World("world");
  if (world.size() != 1) GTEST_SKIP() << "one GPU holds one NCCL rank";
  auto bootstrap = world.Dup("ep");
  ASSERT_OK(bootstrap.status());
  // A device that does not exist fails the local part of the set-up.
  auto comm = NcclCommunicator::CreateLazy(std::move(*bootstrap), ops::CudaDeviceCount());
  EXPECT_FALSE(comm->is_set_up());
  const absl::Status first = WaitFor(comm->Barrier({}));
  ASSERT_FALSE(first.ok());
  EXPECT_NE(first.message().find("NCCL set-up on group 'ep'"), absl::string_view::npos) << first;
  EXPECT_NE(first.message().find("first op: barrier"), absl::string_view::npos) << first;
  EXPECT_EQ(WaitFor(comm->Barrier({})), first);
}

}  // namespace
}  // namespace moefold::parallel
