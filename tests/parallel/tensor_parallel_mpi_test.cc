// Tensor-parallel pieces under mpirun (2 and 4 ranks) against their single-rank references, in f32
// and bf16, forward and backward: column- and row-parallel linears as the layers build them from
// TpGather/TpReduce, with and without sequence parallelism; the vocabulary-parallel embedding and
// cross entropy over an uneven vocabulary split; and the gathering of TP-sharded parameters. Every
// rank computes the reference itself from the same seeds.
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "parallel/mpi_communicator.h"
#include "parallel/tensor_parallel.h"
#include "tests/testing/testing.h"

namespace moefold::parallel {
namespace {

using ::moefold::testing::Columns;
using ::moefold::testing::RandomInts;
using ::moefold::testing::RandomNormal;

Tensor In(const Tensor& f32, DType dtype) { return dtype == DType::kF32 ? f32 : f32.To(dtype); }
Tensor Rows(const Tensor& t, int64_t begin, int64_t end) { return t.Slice(begin, end).Clone(); }

// f32: only the order of the sums differs from one rank. bf16: a TP sum adds bf16-rounded partials
// (rounded once more after the f32 sum), one rank rounds its f32 sum once: about one bf16 ulp.
::testing::AssertionResult Near(const Tensor& actual, const Tensor& expected, DType dtype) {
  const double tol = dtype == DType::kF32 ? 1e-5 : 1e-2;
  return ::moefold::testing::TensorNear(actual.To(DType::kF32), expected.To(DType::kF32), tol, tol);
}

std::string DTypeLabel(DType dtype) { return std::string(DTypeName(dtype)); }

class TensorParallelTest : public ::testing::TestWithParam<std::tuple<bool, DType>> {
 protected:
  // The single-rank reference in the activation dtype: y = x·Wᵀ, and the gradients of ⟨y, c⟩.
  TensorParallelTest() : tp_(MpiCommunicator::World("tp")) {
    ops::LinearForward(x_, w_, &y_ref_, CpuStream());
    ops::LinearBackward(x_, w_, c_, &d_x_ref_, &d_w_ref_, CpuStream());
  }
  int r() const { return tp_.rank(); }
  int n() const { return tp_.size(); }
  bool sp() const { return std::get<0>(GetParam()); }
  DType dt() const { return std::get<1>(GetParam()); }

  static constexpr int64_t kT = 8, kIn = 12, kOut = 8;
  MpiCommunicator tp_;
  const Tensor x_ = In(RandomNormal({kT, kIn}, 1), dt());
  const Tensor w_ = In(RandomNormal({kOut, kIn}, 2), dt());
  const Tensor c_ = In(RandomNormal({kT, kOut}, 3), dt());
  Tensor y_ref_ = Tensor::Empty({kT, kOut}, dt());
  Tensor d_x_ref_ = Tensor::Empty({kT, kIn}, dt());
  Tensor d_w_ref_ = Tensor::Zeros({kOut, kIn}, DType::kF32);
};

// W split by rows: x_full = TpGather(x); y_r = x_full·W_rᵀ; d_x = TpReduce(d_y_r·W_r).
TEST_P(TensorParallelTest, ColumnParallelLinearEqualsTheFullLinear) {
  const int64_t out = kOut / n(), rows = kT / n();
  const Tensor w_shard = Rows(w_, r() * out, (r() + 1) * out);
  const Tensor x_in = sp() ? Rows(x_, r() * rows, (r() + 1) * rows) : x_;
  Tensor x_full;
  ASSERT_OK(TpGather(x_in, &tp_, sp(), &x_full));
  ASSERT_EQ(x_full.dtype(), dt());
  Tensor y = Tensor::Empty({kT, out}, dt());
  ops::LinearForward(x_full, w_shard, &y, CpuStream());
  EXPECT_TRUE(Near(y, Columns(y_ref_, r() * out, (r() + 1) * out), dt()));

  Tensor partial = Tensor::Empty({kT, kIn}, dt());
  Tensor d_w = Tensor::Zeros(w_shard.shape(), DType::kF32);
  ops::LinearBackward(x_full, w_shard, Columns(c_, r() * out, (r() + 1) * out), &partial, &d_w,
                      CpuStream());
  Tensor d_x;
  ASSERT_OK(TpReduce(partial, &tp_, sp(), &d_x));
  ASSERT_EQ(d_x.dtype(), dt());
  EXPECT_TRUE(Near(d_x, sp() ? d_x_ref_.Slice(r() * rows, (r() + 1) * rows) : d_x_ref_, dt()));
  EXPECT_TRUE(Near(d_w, d_w_ref_.Slice(r() * out, (r() + 1) * out), dt()));
}

// W split by columns: y = TpReduce(x_r·W_rᵀ); d_x_r = TpGather(d_y)·W_r.
TEST_P(TensorParallelTest, RowParallelLinearEqualsTheFullLinear) {
  const int64_t in = kIn / n(), rows = kT / n();
  const Tensor x_shard = Columns(x_, r() * in, (r() + 1) * in);
  const Tensor w_shard = Columns(w_, r() * in, (r() + 1) * in);
  Tensor partial = Tensor::Empty({kT, kOut}, dt());
  ops::LinearForward(x_shard, w_shard, &partial, CpuStream());
  Tensor y;
  ASSERT_OK(TpReduce(partial, &tp_, sp(), &y));
  EXPECT_TRUE(Near(y, sp() ? y_ref_.Slice(r() * rows, (r() + 1) * rows) : y_ref_, dt()));

  const Tensor d_y = sp() ? Rows(c_, r() * rows, (r() + 1) * rows) : c_;
  Tensor d_y_full;
  ASSERT_OK(TpGather(d_y, &tp_, sp(), &d_y_full));
  Tensor d_x = Tensor::Empty({kT, in}, dt());
  Tensor d_w = Tensor::Zeros({kOut, in}, DType::kF32);
  ops::LinearBackward(x_shard, w_shard, d_y_full, &d_x, &d_w, CpuStream());
  EXPECT_TRUE(Near(d_x, Columns(d_x_ref_, r() * in, (r() + 1) * in), dt()));
  EXPECT_TRUE(Near(d_w, Columns(d_w_ref_, r() * in, (r() + 1) * in), dt()));
}

// An uneven vocabulary (2·8·tp + 1 rows, as the byte vocabulary 257 over TP 2) split by ShardRange:
// the embedding of each layout equals the full lookup exactly (each token's row comes from one
// rank, zeros from the others, in either dtype), and its gradient the full gradient's rows.
TEST_P(TensorParallelTest, VocabParallelEmbeddingEqualsTheFullEmbedding) {
  const int64_t vocab = 16 * n() + 1, h = 5, t = 4 * n();
  const Tensor table = In(RandomNormal({vocab, h}, 7), dt());
  const Tensor ids = RandomInts({t}, 8, static_cast<int32_t>(vocab));
  const Tensor d_out = In(RandomNormal({t, h}, 9), dt());
  Tensor out_ref = Tensor::Empty({t, h}, dt());
  ops::EmbeddingForward(ids, table, &out_ref, CpuStream());
  Tensor d_table_ref = Tensor::Zeros({vocab, h}, DType::kF32);
  ops::EmbeddingBackward(ids, d_out, &d_table_ref, CpuStream());

  const auto [begin, end] = ShardRange(vocab, r(), n());
  const Tensor shard = table.Slice(begin, end).Clone();
  Tensor out;
  ASSERT_OK(VocabParallelEmbeddingForward(ids, shard, begin, &tp_, sp(), &out, CpuStream()));
  ASSERT_EQ(out.dtype(), dt());
  const int64_t rows = t / n();
  EXPECT_TENSOR_NEAR(out.To(DType::kF32),
                     (sp() ? out_ref.Slice(r() * rows, (r() + 1) * rows) : out_ref).To(DType::kF32),
                     0, 0);
  Tensor d_shard = Tensor::Zeros(shard.shape(), DType::kF32);
  const Tensor d_in = sp() ? Rows(d_out, r() * rows, (r() + 1) * rows) : d_out;
  ASSERT_OK(VocabParallelEmbeddingBackward(ids, d_in, begin, &tp_, sp(), &d_shard, CpuStream()));
  EXPECT_TENSOR_NEAR(d_shard, d_table_ref.Slice(begin, end), 1e-6, 0);
}

INSTANTIATE_TEST_SUITE_P(Layouts, TensorParallelTest,
                         ::testing::Combine(::testing::Bool(),
                                            ::testing::Values(DType::kF32, DType::kBF16)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "Sp" : "NoSp") + "_" +
                                  DTypeLabel(std::get<1>(info.param));
                         });

class VocabParallelCrossEntropyTest : public ::testing::TestWithParam<DType> {};

// Logits of an uneven vocabulary (8·tp + 3) split by ShardRange: the per-token losses and lse equal
// the full cross entropy of the same (bf16-rounded) logits to f32 accuracy, bit-identical on every
// TP rank; the gradient is the full gradient's columns (bf16: within about one ulp, as the merged
// lse differs from the full one in its last f32 bits).
TEST_P(VocabParallelCrossEntropyTest, EqualsTheFullCrossEntropy) {
  const DType dt = GetParam();
  MpiCommunicator tp = MpiCommunicator::World("tp");
  const int64_t n = 6, vocab = 8 * tp.size() + 3;
  const Tensor logits = In(RandomNormal({n, vocab}, 4, 3.0f), dt);
  Tensor targets = RandomInts({n}, 5, static_cast<int32_t>(vocab));
  targets.data<int32_t>()[2] = -1;                               // ignored
  targets.data<int32_t>()[4] = static_cast<int32_t>(vocab - 1);  // in the last shard
  const Tensor d_loss = RandomNormal({n}, 6);
  Tensor loss_ref = Tensor::Empty({n}, DType::kF32), lse_ref = Tensor::Empty({n}, DType::kF32);
  ops::CrossEntropyForward(logits, targets, &loss_ref, &lse_ref, CpuStream());
  Tensor d_ref = Tensor::Empty({n, vocab}, dt);
  ops::CrossEntropyBackward(logits, targets, lse_ref, d_loss, &d_ref, CpuStream());

  // A single rank (no group) runs the unsharded ops themselves.
  Tensor loss1 = Tensor::Empty({n}, DType::kF32), lse1 = Tensor::Empty({n}, DType::kF32);
  ASSERT_OK(
      VocabParallelCrossEntropyForward(logits, targets, 0, nullptr, &loss1, &lse1, CpuStream()));
  EXPECT_TENSOR_NEAR(loss1, loss_ref, 0, 0);

  const auto [begin, end] = ShardRange(vocab, tp.rank(), tp.size());
  const Tensor shard = Columns(logits, begin, end);
  Tensor loss = Tensor::Empty({n}, DType::kF32), lse = Tensor::Empty({n}, DType::kF32);
  ASSERT_OK(VocabParallelCrossEntropyForward(shard, targets, begin, &tp, &loss, &lse, CpuStream()));
  EXPECT_TENSOR_NEAR(loss, loss_ref, 1e-5, 1e-6);
  EXPECT_TENSOR_NEAR(lse, lse_ref, 1e-5, 1e-6);
  EXPECT_EQ(loss.data<float>()[2], 0.0f);
  Tensor every = Tensor::Empty({tp.size(), n}, DType::kF32);
  ASSERT_OK(WaitFor(tp.AllGather(loss, &every, {})));
  for (int other = 0; other < tp.size(); ++other) {
    EXPECT_TENSOR_NEAR(every.Slice(other, other + 1).Reshape({n}), loss, 0, 0) << "rank " << other;
  }

  Tensor d = Tensor::Empty({n, end - begin}, dt);
  VocabParallelCrossEntropyBackward(shard, targets, begin, &tp, lse, d_loss, &d, CpuStream());
  const double tol = dt == DType::kF32 ? 1e-5 : 1e-2;
  EXPECT_TENSOR_NEAR(d.To(DType::kF32), Columns(d_ref, begin, end).To(DType::kF32), tol, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(DTypes, VocabParallelCrossEntropyTest,
                         ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return DTypeLabel(info.param); });

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

}  // namespace
}  // namespace moefold::parallel
