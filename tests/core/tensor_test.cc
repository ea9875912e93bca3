// Tensor views, copies, conversions and the allocator's byte accounting.
#include "core/tensor.h"

#include "core/allocator.h"
#include "core/parameter.h"
#include "core/status.h"
#include "gtest/gtest.h"

namespace moefold {
namespace {

TEST(TensorTest, SliceAndReshareShareStorage) {
  Tensor t = Tensor::FromVector({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor rows = t.Slice(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.ToVector(), (std::vector<float>{2, 3, 4, 5}));
  rows.data<float>()[0] = 42;
  EXPECT_EQ(t.ToVector()[2], 42);
  Tensor flat = t.Reshape({6});
  EXPECT_EQ(flat.ToVector()[2], 42);
  Tensor copy = t.Clone();
  copy.data<float>()[0] = -1;
  EXPECT_EQ(t.ToVector()[0], 0);
}

TEST(TensorTest, ConversionsRoundThroughDType) {
  Tensor t = Tensor::FromVector({1.0f, 1.00390625f, 500.0f, -3.0f}, {4});
  EXPECT_EQ(t.To(DType::kBF16).ToVector(), (std::vector<float>{1.0f, 1.0f, 500.0f, -3.0f}));
  EXPECT_EQ(t.To(DType::kFp8E4M3).ToVector(), (std::vector<float>{1.0f, 1.0f, 448.0f, -3.0f}));
  EXPECT_EQ(t.To(DType::kBF16).nbytes(), 8u);
}

TEST(TensorTest, AllocatorCountsBytes) {
  CpuAllocator& mem = CpuMemory();
  const size_t before = mem.current_bytes();
  {
    Tensor t = Tensor::Zeros({1000}, DType::kF32);
    EXPECT_EQ(mem.current_bytes(), before + 4000);
    EXPECT_GE(mem.peak_bytes(), before + 4000);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % CpuAllocator::kAlignment, 0u);
  }
  EXPECT_EQ(mem.current_bytes(), before);
}

TEST(TensorDeathTest, WrongElementTypeIsAnInvariantFailure) {
  Tensor t = Tensor::Zeros({2}, DType::kF32);
  EXPECT_DEATH(t.data<int32_t>(), "does not match");
  EXPECT_DEATH(t.Slice(1, 3), "slice");
}

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}
absl::Status Quarter(int x, int* out) {
  MF_ASSIGN_OR_RETURN(int h, Half(x));
  MF_ASSIGN_OR_RETURN(*out, Half(h));
  return absl::OkStatus();
}

TEST(StatusTest, MacrosPropagate) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  absl::Status s = Quarter(6, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Annotate(s, "layer 3").message(), "layer 3: odd");
}

}  // namespace
}  // namespace moefold

namespace moefold {
namespace {

TEST(ParameterSetTest, FlattenKeepsValuesAndMakesViewsIntoPaddedBuffers) {
  ParameterSet set;
  Parameter* a = set.Add("a.weight", {2, 3}, GradReduction::kDenseDataCp, 1.0f);
  Parameter* e = set.Add("m.experts.w.weight", {2, 2}, GradReduction::kExpertData, 1.0f);
  e->sharding.expert_dim = 0;
  Parameter* n = set.Add("n.weight", {3}, GradReduction::kDenseDataCpTp, 0.0f, false, 1.0f);
  set.Initialize(3);
  const std::vector<float> a_before = a->value.ToVector();
  auto& flat = set.Flatten(4);
  ASSERT_EQ(flat.size(), 2u);
  EXPECT_EQ(flat[0].group, DataGroup::kDense);
  EXPECT_EQ(flat[0].used, 9);
  EXPECT_EQ(flat[0].values.numel(), 12);  // padded to a multiple of 4
  EXPECT_EQ(flat[1].group, DataGroup::kExpert);
  EXPECT_EQ(flat[1].values.numel(), 4);
  EXPECT_EQ(a->value.ToVector(), a_before);
  EXPECT_EQ(n->value.ToVector(), (std::vector<float>{1, 1, 1}));
  // Writing through the parameter is visible in the buffer and vice versa.
  a->grad.data<float>()[5] = 7;
  EXPECT_EQ(flat[0].grads.ToVector()[5], 7);
  flat[0].values.data<float>()[6] = 9;
  EXPECT_EQ(n->value.ToVector()[0], 9);
  set.ZeroGrads();
  EXPECT_EQ(a->grad.ToVector()[5], 0);
}

}  // namespace
}  // namespace moefold
