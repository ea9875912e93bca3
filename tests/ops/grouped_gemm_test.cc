// Tests of the grouped expert linear: each expert's rows times its own weight (an expert with no
// rows included), and finite-difference checks of d_x and the accumulated d_w.
#include "ops/grouped_gemm.h"

#include "ops/gemm.h"
#include "tests/ops/grad_check.h"
#include "tests/testing/testing.h"

namespace moefold::ops {
namespace {

using ::moefold::ops::testing::Delta;
using ::moefold::ops::testing::GradientMatches;
using ::moefold::testing::Dot;
using ::moefold::testing::RandomNormal;

constexpr int64_t kIn = 3, kOut = 2;

TEST(GroupedLinearTest, EachExpertUsesItsOwnWeight) {
  const Tensor counts = Tensor::FromVectorI32({2, 0, 3}, {3});  // expert 1 gets no rows
  const Tensor x = RandomNormal({5, kIn}, 1);
  const Tensor w = RandomNormal({3, kOut, kIn}, 2);
  Tensor y = Tensor::Zeros({5, kOut}, DType::kF32);
  GroupedLinearForward(x, w, counts, &y, CpuStream());
  const int64_t first[] = {0, 2, 2}, expert_of_block[] = {0, 2};
  for (int block = 0; block < 2; ++block) {
    const int64_t e = expert_of_block[block];
    const int64_t begin = first[e], end = begin + counts.data<int32_t>()[e];
    Tensor expected = Tensor::Zeros({end - begin, kOut}, DType::kF32);
    LinearForward(x.Slice(begin, end), w.Slice(e, e + 1).Reshape({kOut, kIn}), &expected,
                  CpuStream());
    EXPECT_TENSOR_NEAR(y.Slice(begin, end), expected, 1e-6, 1e-6);
  }
}

TEST(GroupedLinearTest, BackwardMatchesFiniteDifferencesAndAccumulatesDw) {
  const Tensor counts = Tensor::FromVectorI32({1, 3, 0}, {3});
  Tensor x = RandomNormal({4, kIn}, 3);
  Tensor w = RandomNormal({3, kOut, kIn}, 4);
  const Tensor cot = RandomNormal({4, kOut}, 5);
  Tensor y = Tensor::Zeros({4, kOut}, DType::kF32);
  auto loss = [&] {
    GroupedLinearForward(x, w, counts, &y, CpuStream());
    return Dot(y, cot);
  };
  Tensor d_x = RandomNormal(x.shape(), 6);  // overwritten
  const Tensor before = RandomNormal(w.shape(), 7);
  Tensor d_w = before.Clone();  // accumulated; expert 2 (no rows) keeps its old value
  GroupedLinearBackward(x, w, counts, cot, &d_x, &d_w, CpuStream());
  EXPECT_TRUE(GradientMatches(d_x, loss, &x));
  EXPECT_TRUE(GradientMatches(Delta(d_w, before), loss, &w));
}

}  // namespace
}  // namespace moefold::ops
