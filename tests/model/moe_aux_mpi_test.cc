// The MoE aux-loss and z-loss gradients do not depend on the layout (mpirun, 2 and 4 ranks): the
// router gradient of a micro-batch seeded with the aux and z losses only, summed over the ranks,
// and each rank's input gradient rows equal the single-rank ones, whether the tokens are split by
// sequence parallelism, by TP without SP (each TP rank routes its share) or by context parallelism
// (2·CP chunks per sequence), for batch- and sequence-level aux losses. The sequence-level aux
// loss and its gradient are also the same for every micro-batch size (checked directly here, not
// only through the training loss).
#include <mpi.h>

#include "core/model/moe_layer.h"
#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"
#include "parallel/ring_attention.h"
#include "tests/testing/testing.h"

namespace moefold::model {
namespace {

using ::moefold::testing::RandomNormal;

constexpr int64_t kBatch = 4, kSeq = 16, kHidden = 8;

ModelSpec Spec(AuxLossType aux) {
  ModelSpec spec;
  spec.hidden = kHidden;
  spec.num_layers = 1;
  spec.init_std = 0.5f;
  spec.moe_layer = {true};
  spec.moe.num_experts = 4;
  spec.moe.top_k = 2;
  spec.moe.expert_ffn = 6;
  spec.moe.topk.k = 2;
  spec.moe.aux_type = aux;
  spec.moe.aux_coeff = 0.3f;
  spec.moe.z_coeff = 0.05f;
  return spec;
}

MicroBatch Batch(int64_t b, const Tensor& positions) {
  MicroBatch batch;
  batch.tokens = Tensor::Zeros({b, positions.numel()}, DType::kI32);
  batch.targets = Tensor::Zeros({b, positions.numel()}, DType::kI32);
  batch.positions = positions;
  return batch;
}

Tensor Iota(int64_t n) {
  Tensor p = Tensor::Empty({n}, DType::kI32);
  for (int64_t i = 0; i < n; ++i) p.data<int32_t>()[i] = static_cast<int32_t>(i);
  return p;
}

struct AuxGrads {
  double aux = 0, z = 0;  // this rank's loss parts
  Tensor d_router;        // (E, H) this rank's part
  Tensor d_x;             // rows of x given
};

// Forward + backward with only the aux and z losses seeded (the output gradient is zero).
AuxGrads RunAux(const ModelSpec& spec, const ModelParallel& mp, const MicroBatch& batch,
                const Tensor& x) {
  ParameterSet params;
  MoeLayer layer(spec, mp, "m", &params);
  params.Initialize(3);
  StepContext ctx{&CpuStream()};
  ctx.ResetDeviceSums();
  MoeLayer::Saved saved;
  ForwardStats stats;
  Tensor y;
  MF_CHECK(layer.Forward(ctx, batch, x, &saved, &y, &stats).ok());
  Tensor d_x;
  const BackwardSeeds seeds{{}, 1.0f, 1.0f};
  MF_CHECK(layer.Backward(ctx, saved, Tensor::Zeros(y.shape(), DType::kF32), seeds, &d_x).ok());
  const std::vector<float> sums = ctx.device_sums.ToVector();
  return {sums[kAuxLossSum], sums[kZLossSum], params.Find("m.gate.weight")->grad.Clone(), d_x};
}

double SumOverRanks(parallel::Communicator& comm, double v) {
  Tensor t = Tensor::FromVector({static_cast<float>(v)}, {1});
  MF_CHECK(parallel::WaitFor(comm.AllReduce(&t, {})).ok());
  return t.data<float>()[0];
}

// Rows of x (B·S, H) at sequence positions `positions` of every sequence.
Tensor SelectPositions(const Tensor& x, const Tensor& positions) {
  const int64_t s = positions.numel();
  Tensor out = Tensor::Empty({kBatch * s, kHidden}, DType::kF32);
  for (int64_t b = 0; b < kBatch; ++b) {
    for (int64_t j = 0; j < s; ++j) {
      out.Slice(b * s + j, b * s + j + 1)
          .CopyFrom(x.Slice(b * kSeq + positions.data<int32_t>()[j],
                            b * kSeq + positions.data<int32_t>()[j] + 1));
    }
  }
  return out;
}

enum class Split { kSequenceParallel, kTensorParallelRows, kContextParallel };

class MoeAuxLayoutTest : public ::testing::TestWithParam<std::tuple<Split, AuxLossType>> {};

TEST_P(MoeAuxLayoutTest, AuxAndZGradientsMatchOneRank) {
  const auto [split, aux] = GetParam();
  const ModelSpec spec = Spec(aux);
  const Tensor x = RandomNormal({kBatch * kSeq, kHidden}, 5);
  const AuxGrads ref = RunAux(spec, {}, Batch(kBatch, Iota(kSeq)), x);

  parallel::MpiCommunicator world = parallel::MpiCommunicator::World("tp-cp");
  const int n = world.size(), r = world.rank();
  ModelParallel mp;
  mp.tp_cp = &world;
  AuxGrads got;
  Tensor expected_d_x;
  if (split == Split::kContextParallel) {
    mp.cp = &world;
    const Tensor positions = parallel::ContextParallelPositions(kSeq, n, r);
    const Tensor mine = SelectPositions(x, positions);
    got = RunAux(spec, mp, Batch(kBatch, positions), mine);
    expected_d_x = SelectPositions(ref.d_x, positions);
  } else {
    mp.tp = &world;
    mp.sequence_parallel = split == Split::kSequenceParallel;
    const int64_t rows = kBatch * kSeq / n;
    const MicroBatch batch = Batch(kBatch, Iota(kSeq));
    if (mp.sequence_parallel) {
      got = RunAux(spec, mp, batch, x.Slice(r * rows, (r + 1) * rows).Clone());
      expected_d_x = ref.d_x.Slice(r * rows, (r + 1) * rows);
    } else {
      got = RunAux(spec, mp, batch, x);  // every TP rank holds every row; each routes its share
      expected_d_x = ref.d_x;
    }
  }
  EXPECT_NEAR(SumOverRanks(world, got.aux), ref.aux, 1e-5 * ref.aux);
  EXPECT_NEAR(SumOverRanks(world, got.z), ref.z, 1e-5 * ref.z);
  Tensor d_router = got.d_router;
  ASSERT_OK(parallel::WaitFor(world.AllReduce(&d_router, {})));
  EXPECT_TENSOR_NEAR(d_router, ref.d_router, 1e-4, 1e-6);
  EXPECT_TENSOR_NEAR(got.d_x, expected_d_x, 1e-4, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, MoeAuxLayoutTest,
    ::testing::Combine(::testing::Values(Split::kSequenceParallel, Split::kTensorParallelRows,
                                         Split::kContextParallel),
                       ::testing::Values(AuxLossType::kBatch, AuxLossType::kSequence)));

TEST(MoeAuxMicroBatchTest, SequenceAuxLossIsTheSameForEveryMicroBatchSize) {
  const ModelSpec spec = Spec(AuxLossType::kSequence);
  const Tensor x = RandomNormal({kBatch * kSeq, kHidden}, 6);
  const AuxGrads whole = RunAux(spec, {}, Batch(kBatch, Iota(kSeq)), x);
  for (int64_t micro : {1, 2}) {
    double aux = 0;
    Tensor d_router = Tensor::Zeros(whole.d_router.shape(), DType::kF32);
    for (int64_t m = 0; m < kBatch / micro; ++m) {
      const AuxGrads part = RunAux(spec, {}, Batch(micro, Iota(kSeq)),
                                   x.Slice(m * micro * kSeq, (m + 1) * micro * kSeq).Clone());
      aux += part.aux;
      for (int64_t i = 0; i < d_router.numel(); ++i) {
        d_router.data<float>()[i] += part.d_router.data<float>()[i];
      }
    }
    EXPECT_NEAR(aux, whole.aux, 1e-6 * whole.aux) << "micro-batch " << micro;
    EXPECT_TENSOR_NEAR(d_router, whole.d_router, 1e-5, 1e-7) << "micro-batch " << micro;
  }
}

}  // namespace
}  // namespace moefold::model
