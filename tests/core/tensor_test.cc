// Tensor views, copies, conversions and the allocator's byte accounting.
#include "core/tensor.h"

#include "core/allocator.h"
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
