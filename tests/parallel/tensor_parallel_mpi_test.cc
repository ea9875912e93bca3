// Tensor-parallel ops under mpirun (2 and 4 ranks) against their single-rank references, forward and
// backward: column- and row-parallel linears with and without sequence parallelism, and the
// vocabulary-parallel cross entropy. Every rank computes the reference itself from the same seeds.
#include "parallel/tensor_parallel.h"

#include "gtest/gtest.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "parallel/mpi_communicator.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;

// Columns [begin, end) of a 2-D tensor, as a new contiguous tensor.
Tensor Columns(const Tensor& t, int64_t begin, int64_t end) {
  Tensor out = Tensor::Empty({t.dim(0), end - begin}, DType::kF32);
  for (int64_t i = 0; i < t.dim(0); ++i) {
    for (int64_t j = begin; j < end; ++j) {
      out.data<float>()[i * (end - begin) + j - begin] = t.data<float>()[i * t.dim(1) + j];
    }
  }
  return out;
}

class TensorParallelTest : public ::testing::TestWithParam<bool> {
 protected:
  // The single-rank reference: y = x·Wᵀ, and the gradients of ⟨y, c⟩.
  TensorParallelTest() : tp_(MpiCommunicator::World("tp")) {
    ops::LinearForward(x_, w_, &y_ref_, CpuStream());
    ops::LinearBackward(x_, w_, c_, &d_x_ref_, &d_w_ref_, CpuStream());
  }
  int r() const { return tp_.rank(); }
  int n() const { return tp_.size(); }

  static constexpr int64_t kT = 8, kIn = 12, kOut = 8;
  MpiCommunicator tp_;
  const Tensor x_ = RandomNormal({kT, kIn}, 1);
  const Tensor w_ = RandomNormal({kOut, kIn}, 2);
  const Tensor c_ = RandomNormal({kT, kOut}, 3);
  Tensor y_ref_ = Tensor::Empty({kT, kOut}, DType::kF32);
  Tensor d_x_ref_ = Tensor::Empty({kT, kIn}, DType::kF32);
  Tensor d_w_ref_ = Tensor::Zeros({kOut, kIn}, DType::kF32);
};

TEST_P(TensorParallelTest, ColumnParallelLinearEqualsTheFullLinear) {
  const bool sp = GetParam();
  const Tensor& y_ref = y_ref_;
  const Tensor& d_x_ref = d_x_ref_;
  const Tensor& d_w_ref = d_w_ref_;

  const int64_t out = kOut / n(), rows = kT / n();
  const Tensor w_shard = w_.Slice(r() * out, (r() + 1) * out).Clone();
  const Tensor x_in = sp ? x_.Slice(r() * rows, (r() + 1) * rows).Clone() : x_;
  Tensor x_full, y = Tensor::Empty({kT, out}, DType::kF32);
  ASSERT_OK(ColumnParallelLinearForward(x_in, w_shard, tp_, sp, &x_full, &y));
  EXPECT_TENSOR_NEAR(y, Columns(y_ref, r() * out, (r() + 1) * out), 1e-5, 1e-6);

  Tensor d_x = Tensor::Empty(x_in.shape(), DType::kF32);
  Tensor d_w = Tensor::Zeros(w_shard.shape(), DType::kF32);
  ASSERT_OK(ColumnParallelLinearBackward(x_full, w_shard, Columns(c_, r() * out, (r() + 1) * out),
                                         tp_, sp, &d_x, &d_w));
  EXPECT_TENSOR_NEAR(d_x, sp ? d_x_ref.Slice(r() * rows, (r() + 1) * rows) : d_x_ref, 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(d_w, d_w_ref.Slice(r() * out, (r() + 1) * out), 1e-5, 1e-6);
}

TEST_P(TensorParallelTest, RowParallelLinearEqualsTheFullLinear) {
  const bool sp = GetParam();
  const Tensor& y_ref = y_ref_;
  const Tensor& d_x_ref = d_x_ref_;
  const Tensor& d_w_ref = d_w_ref_;

  const int64_t in = kIn / n(), rows = kT / n();
  const Tensor x_shard = Columns(x_, r() * in, (r() + 1) * in);
  const Tensor w_shard = Columns(w_, r() * in, (r() + 1) * in);
  Tensor y = Tensor::Empty({sp ? rows : kT, kOut}, DType::kF32);
  ASSERT_OK(RowParallelLinearForward(x_shard, w_shard, tp_, sp, &y));
  EXPECT_TENSOR_NEAR(y, sp ? y_ref.Slice(r() * rows, (r() + 1) * rows) : y_ref, 1e-5, 1e-6);

  Tensor d_x = Tensor::Empty({kT, in}, DType::kF32);
  Tensor d_w = Tensor::Zeros({kOut, in}, DType::kF32);
  const Tensor d_y = sp ? c_.Slice(r() * rows, (r() + 1) * rows).Clone() : c_;
  ASSERT_OK(RowParallelLinearBackward(x_shard, w_shard, d_y, tp_, sp, &d_x, &d_w));
  EXPECT_TENSOR_NEAR(d_x, Columns(d_x_ref, r() * in, (r() + 1) * in), 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(d_w, Columns(d_w_ref, r() * in, (r() + 1) * in), 1e-5, 1e-6);
}

// An uneven vocabulary (2·8·tp + 1 rows, as the byte vocabulary 257 over TP 2) split by ShardRange:
// the embedding of each layout equals the full lookup, and its gradient the full gradient's rows.
TEST_P(TensorParallelTest, VocabParallelEmbeddingEqualsTheFullEmbedding) {
  const bool sp = GetParam();
  const int64_t vocab = 16 * n() + 1, h = 5, t = 4 * n();
  const Tensor table = RandomNormal({vocab, h}, 7);
  const Tensor ids = RandomInts({t}, 8, static_cast<int32_t>(vocab));
  const Tensor d_out = RandomNormal({t, h}, 9);
  Tensor out_ref = Tensor::Empty({t, h}, DType::kF32);
  ops::EmbeddingForward(ids, table, &out_ref, CpuStream());
  Tensor d_table_ref = Tensor::Zeros({vocab, h}, DType::kF32);
  ops::EmbeddingBackward(ids, d_out, &d_table_ref, CpuStream());

  const auto [begin, end] = ShardRange(vocab, r(), n());
  const Tensor shard = table.Slice(begin, end).Clone();
  Tensor out;
  ASSERT_OK(VocabParallelEmbeddingForward(ids, shard, begin, &tp_, sp, &out));
  const int64_t rows = t / n();
  EXPECT_TENSOR_NEAR(out, sp ? out_ref.Slice(r() * rows, (r() + 1) * rows) : out_ref, 1e-6, 0);
  Tensor d_shard = Tensor::Zeros(shard.shape(), DType::kF32);
  const Tensor d_in = sp ? d_out.Slice(r() * rows, (r() + 1) * rows).Clone() : d_out;
  ASSERT_OK(VocabParallelEmbeddingBackward(ids, d_in, begin, &tp_, sp, &d_shard));
  EXPECT_TENSOR_NEAR(d_shard, d_table_ref.Slice(begin, end), 1e-6, 0);
}

// Shards of every dimension, even and uneven, gather back into the whole tensor.
TEST(GatherTpShardsTest, AssemblesTheWholeTensor) {
  MpiCommunicator tp = MpiCommunicator::World("tp");
  ParameterSet whole;
  Parameter* w = whole.Add("w.weight", {2 * tp.size() + 1, 3, 2}, GradReduction::kDenseDataCp, 1);
  whole.Initialize(3);
  for (int dim : {0, 1, 2}) {
    ParameterSet part;
    Parameter* shard = part.Add("w.weight", w->value.shape(), GradReduction::kDenseDataCp, 1, true,
                                0, {.dim = dim, .rank = tp.rank(), .size = tp.size()});
    part.Initialize(3);
    auto gathered = GatherTpShards(*shard, &tp);
    ASSERT_OK(gathered);
    EXPECT_TENSOR_NEAR(*gathered, w->value, 0, 0) << "dim " << dim;
  }
  // A group that does not match the parameter's split is refused.
  ParameterSet wrong;
  Parameter* p = wrong.Add("w.weight", {4}, GradReduction::kDenseDataCp, 1, true, 0,
                           {.dim = 0, .rank = 0, .size = tp.size() + 1});
  EXPECT_FALSE(GatherTpShards(*p, &tp).ok());
}

INSTANTIATE_TEST_SUITE_P(SequenceParallel, TensorParallelTest, ::testing::Bool());

TEST(VocabParallelCrossEntropyTest, EqualsTheFullCrossEntropy) {
  MpiCommunicator tp = MpiCommunicator::World("tp");
  const int64_t n = 6, vocab = 8 * tp.size(), slice = vocab / tp.size();
  const Tensor logits = RandomNormal({n, vocab}, 4, 3.0f);
  Tensor targets = RandomInts({n}, 5, static_cast<int32_t>(vocab));
  targets.data<int32_t>()[2] = -1;  // ignored
  const Tensor d_loss = RandomNormal({n}, 6);
  Tensor loss_ref = Tensor::Empty({n}, DType::kF32), lse_ref = Tensor::Empty({n}, DType::kF32);
  ops::CrossEntropyForward(logits, targets, &loss_ref, &lse_ref, CpuStream());
  Tensor d_ref = Tensor::Empty({n, vocab}, DType::kF32);
  ops::CrossEntropyBackward(logits, targets, lse_ref, d_loss, &d_ref, CpuStream());

  const int64_t offset = tp.rank() * slice;
  const Tensor shard = Columns(logits, offset, offset + slice);
  Tensor loss = Tensor::Empty({n}, DType::kF32), lse = Tensor::Empty({n}, DType::kF32);
  ASSERT_OK(VocabParallelCrossEntropyForward(shard, targets, offset, tp, &loss, &lse));
  EXPECT_TENSOR_NEAR(loss, loss_ref, 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(lse, lse_ref, 1e-5, 1e-6);
  Tensor d = Tensor::Empty({n, slice}, DType::kF32);
  VocabParallelCrossEntropyBackward(shard, targets, offset, lse, d_loss, &d);
  EXPECT_TENSOR_NEAR(d, Columns(d_ref, offset, offset + slice), 1e-5, 1e-6);
}

}  // namespace
}  // namespace moefold::parallel
