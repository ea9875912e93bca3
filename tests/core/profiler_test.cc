// Tests of the op-family profiler on the CPU and, with a GPU, on cuda:0 (the same cases: one code
// path). Work is a host sleep (plus a memset on the GPU); the checks are structural — exclusive
// times, sums, calls, layers — with bounds far wider than a loaded machine's sleep overshoot.
#include "core/profiler.h"

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/cuda_runtime.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "tests/testing/cuda_testing.h"
#include "tests/testing/testing.h"

namespace moefold {
namespace {

double SumOfFamilies(const StepProfile& p) {
  double sum = 0;
  for (double ms : p.family_ms) sum += ms;
  return sum;
}

int Index(OpFamily family) { return static_cast<int>(family); }

class ProfilerTest : public ::testing::TestWithParam<Device> {
 protected:
  void SetUp() override {
    if (GetParam().is_cuda()) {
      MF_REQUIRE_GPU();
      buffer_ = Tensor::Empty({16 << 20}, DType::kF32, GetParam());
    }
    absl::StatusOr<std::unique_ptr<Profiler>> profiler = Profiler::Create(GetParam());
    ASSERT_TRUE(profiler.ok()) << profiler.status();
    profiler_ = *std::move(profiler);
  }

  const Stream& stream() const { return DefaultStream(GetParam()); }

  // At least `ms` of host time, and on the GPU some device work too, between two marks.
  void Work(double ms) {
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(ms));
    if (GetParam().is_cuda()) {
      ASSERT_OK(cuda::Memset(buffer_.raw_data(), 0, buffer_.nbytes(), stream().native()));
    }
  }

  StepProfile End() {
    absl::StatusOr<StepProfile> p = profiler_->EndStep(stream());
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? *p : StepProfile();
  }

  std::unique_ptr<Profiler> profiler_;
  Tensor buffer_;
};

TEST_P(ProfilerTest, NestedScopesGiveExclusiveTimes) {
  ASSERT_OK(profiler_->BeginStep(stream()));
  EXPECT_TRUE(profiler_->active());
  Work(2);  // unscoped
  {
    ProfileScope attention(profiler_.get(), OpFamily::kAttention, stream(), /*layer=*/0);
    Work(3);
    {
      ProfileScope gemm(profiler_.get(), OpFamily::kGemm, stream(), /*layer=*/0);
      Work(30);
    }
    Work(3);
  }
  Work(2);
  const StepProfile p = End();
  EXPECT_FALSE(profiler_->active());
  const double attention = p.family_ms[Index(OpFamily::kAttention)];
  const double gemm = p.family_ms[Index(OpFamily::kGemm)];
  EXPECT_GE(gemm, 29.0);
  EXPECT_GE(attention, 5.5);
  // Inclusive timing would give the attention scope its child's 30 ms too.
  EXPECT_LT(attention, 25.0);
  EXPECT_GE(p.unattributed_ms, 3.5);
  EXPECT_GE(p.step_ms, 39.5);
  EXPECT_NEAR(SumOfFamilies(p) + p.unattributed_ms, p.step_ms, 1e-6 * p.step_ms);
  EXPECT_EQ(p.calls[Index(OpFamily::kAttention)], 1);
  EXPECT_EQ(p.calls[Index(OpFamily::kGemm)], 1);
  for (OpFamily other : {OpFamily::kExpertGemm, OpFamily::kNorm, OpFamily::kOther}) {
    EXPECT_EQ(p.family_ms[Index(other)], 0.0);
    EXPECT_EQ(p.calls[Index(other)], 0);
  }
}

// With set_record_spans every scope's interval comes back, nested like the scopes, in the order
// they closed; the host clock at BeginStep anchors them.
TEST_P(ProfilerTest, RecordsNestedSpansWhenAsked) {
  const auto before = std::chrono::steady_clock::now();
  profiler_->set_record_spans(true);
  ASSERT_OK(profiler_->BeginStep(stream()));
  Work(1);
  {
    ProfileScope attention(profiler_.get(), OpFamily::kAttention, stream(), /*layer=*/2);
    Work(2);
    {
      ProfileScope gemm(profiler_.get(), OpFamily::kGemm, stream(), /*layer=*/2);
      Work(5);
    }
    Work(1);
  }
  {
    ProfileScope optimizer(profiler_.get(), OpFamily::kOptimizer, stream());
    Work(1);
  }
  const StepProfile p = End();
  EXPECT_GE(p.host_begin, before);
  EXPECT_LE(p.host_begin, std::chrono::steady_clock::now());
  ASSERT_EQ(p.spans.size(), 3u);
  const ProfileSpan& gemm = p.spans[0];
  const ProfileSpan& attention = p.spans[1];
  const ProfileSpan& optimizer = p.spans[2];
  EXPECT_EQ(gemm.family, Index(OpFamily::kGemm));
  EXPECT_EQ(gemm.layer, 2);
  EXPECT_EQ(attention.family, Index(OpFamily::kAttention));
  EXPECT_EQ(optimizer.family, Index(OpFamily::kOptimizer));
  EXPECT_EQ(optimizer.layer, -1);
  EXPECT_GE(attention.start_ms, 0.5);  // after the unscoped 1 ms
  EXPECT_LE(attention.start_ms, gemm.start_ms);
  EXPECT_LE(gemm.end_ms, attention.end_ms);
  EXPECT_GE(gemm.end_ms - gemm.start_ms, 4.5);
  EXPECT_LE(attention.end_ms, optimizer.start_ms);
  EXPECT_LE(optimizer.end_ms, p.step_ms);
  // The next step without spans lists none.
  profiler_->set_record_spans(false);
  ASSERT_OK(profiler_->BeginStep(stream()));
  { ProfileScope gemm(profiler_.get(), OpFamily::kGemm, stream()); }
  EXPECT_TRUE(End().spans.empty());
}

TEST_P(ProfilerTest, CountsCallsAndKeepsLayersApart) {
  ASSERT_OK(profiler_->BeginStep(stream()));
  {
    ProfileScope embedding(profiler_.get(), OpFamily::kEmbedding, stream());
    Work(1);
  }
  for (int layer = 0; layer < 3; ++layer) {
    for (int i = 0; i < 2; ++i) {
      ProfileScope norm(profiler_.get(), OpFamily::kNorm, stream(), layer);
      Work(1);
    }
    ProfileScope attention(profiler_.get(), OpFamily::kAttention, stream(), layer);
    Work(2 + 4 * layer);  // layers differ, so a mix-up shows
  }
  const StepProfile p = End();
  EXPECT_EQ(p.calls[Index(OpFamily::kNorm)], 6);
  EXPECT_EQ(p.calls[Index(OpFamily::kAttention)], 3);
  EXPECT_EQ(p.calls[Index(OpFamily::kEmbedding)], 1);
  // (family, layer) keys: 3 norm + 3 attention + embedding without a layer.
  EXPECT_EQ(p.family_layer_ms.size(), 7u);
  ASSERT_EQ(p.family_layer_ms.count({Index(OpFamily::kEmbedding), -1}), 1u);
  double per_layer_sum[kNumOpFamilies] = {};
  for (const auto& [key, ms] : p.family_layer_ms) per_layer_sum[key.first] += ms;
  for (int f = 0; f < kNumOpFamilies; ++f) {
    EXPECT_NEAR(per_layer_sum[f], p.family_ms[f], 1e-6 * p.step_ms) << f;
  }
  const double l0 = p.family_layer_ms.at({Index(OpFamily::kAttention), 0});
  const double l2 = p.family_layer_ms.at({Index(OpFamily::kAttention), 2});
  EXPECT_GE(l0, 1.5);
  EXPECT_GE(l2, 9.5);
  EXPECT_GT(l2, l0);
  EXPECT_NEAR(SumOfFamilies(p) + p.unattributed_ms, p.step_ms, 1e-6 * p.step_ms);
}

TEST_P(ProfilerTest, ScopesAreFreeWithoutAnActiveProfiler) {
  { ProfileScope none(nullptr, OpFamily::kGemm, stream(), 3); }
  {
    ProfileScope inactive(profiler_.get(), OpFamily::kGemm, stream(), 3);
    profiler_->Push(OpFamily::kLoss, -1, stream());
    profiler_->Pop(stream());
    profiler_->Pop(stream());  // no error outside a step either
  }
  EXPECT_FALSE(profiler_->active());
  ASSERT_OK(profiler_->BeginStep(stream()));
  const StepProfile p = End();
  for (int f = 0; f < kNumOpFamilies; ++f) EXPECT_EQ(p.calls[f], 0) << f;
  EXPECT_TRUE(p.family_layer_ms.empty());
  EXPECT_EQ(p.unattributed_ms, p.step_ms);
}

TEST_P(ProfilerTest, EndStepResetsForTheNextStep) {
  for (int step = 0; step < 3; ++step) {
    ASSERT_OK(profiler_->BeginStep(stream()));
    ProfileScope scope(profiler_.get(), step == 1 ? OpFamily::kLoss : OpFamily::kRouter, stream());
    Work(1);
    profiler_->Pop(stream());  // the scope's own Pop, before EndStep; its destructor then skips
    const StepProfile p = End();
    EXPECT_EQ(p.calls[Index(OpFamily::kLoss)], step == 1 ? 1 : 0);
    EXPECT_EQ(p.calls[Index(OpFamily::kRouter)], step == 1 ? 0 : 1);
    EXPECT_EQ(p.family_layer_ms.size(), 1u);
  }
  EXPECT_EQ(profiler_->EndStep(stream()).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_OK(profiler_->BeginStep(stream()));
  EXPECT_EQ(profiler_->BeginStep(stream()).code(), absl::StatusCode::kFailedPrecondition);
  End();
}

TEST_P(ProfilerTest, UnbalancedScopesSpoilOnlyTheirStep) {
  ASSERT_OK(profiler_->BeginStep(stream()));
  profiler_->Push(OpFamily::kAttention, 5, stream());
  const absl::StatusOr<StepProfile> open = profiler_->EndStep(stream());
  EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(open.status().message().find("attention (layer 5)"), std::string::npos)
      << open.status();
  EXPECT_FALSE(profiler_->active());

  ASSERT_OK(profiler_->BeginStep(stream()));
  profiler_->Pop(stream());
  EXPECT_EQ(profiler_->EndStep(stream()).status().code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_OK(profiler_->BeginStep(stream()));
  const StepProfile p = End();
  EXPECT_EQ(p.calls[Index(OpFamily::kAttention)], 0);
}

TEST_P(ProfilerTest, AScopeThatOutlivesItsStepLeavesTheNextAlone) {
  ASSERT_OK(profiler_->BeginStep(stream()));
  auto stale = std::make_unique<ProfileScope>(profiler_.get(), OpFamily::kOptimizer, stream());
  EXPECT_FALSE(profiler_->EndStep(stream()).ok());  // the scope is still open
  ASSERT_OK(profiler_->BeginStep(stream()));
  ProfileScope current(profiler_.get(), OpFamily::kGemm, stream());
  stale.reset();  // must not pop `current`
  profiler_->Pop(stream());
  const StepProfile p = End();
  EXPECT_EQ(p.calls[Index(OpFamily::kGemm)], 1);
  EXPECT_EQ(p.calls[Index(OpFamily::kOptimizer)], 0);
}

TEST_P(ProfilerTest, ThePoolGrowsForLongStepsAndIsReused) {
  for (int step = 0; step < 2; ++step) {
    ASSERT_OK(profiler_->BeginStep(stream()));
    for (int i = 0; i < 150; ++i) {
      ProfileScope scope(profiler_.get(), OpFamily::kActivation, stream(), i % 4);
    }
    const StepProfile p = End();
    EXPECT_EQ(p.calls[Index(OpFamily::kActivation)], 150);
    EXPECT_EQ(p.family_layer_ms.size(), 4u);
    EXPECT_NEAR(SumOfFamilies(p) + p.unattributed_ms, p.step_ms, 1e-6 * p.step_ms + 1e-9);
  }
}

TEST_P(ProfilerTest, AStreamOfAnotherDeviceIsRefused) {
  const Device other = GetParam().is_cpu() ? Device::Cuda(0) : Device::Cpu();
  if (other.is_cuda() && cuda::DeviceCount() == 0) {
    // Without a GPU there is no stream of another device to give; the check is the same code.
    EXPECT_TRUE(profiler_->BeginStep(stream()).ok());
    End();
    return;
  }
  EXPECT_EQ(profiler_->BeginStep(DefaultStream(other)).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_OK(profiler_->BeginStep(stream()));
  profiler_->Push(OpFamily::kGemm, 0, DefaultStream(other));
  profiler_->Pop(stream());
  EXPECT_EQ(profiler_->EndStep(stream()).status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Devices, ProfilerTest, ::testing::Values(Device::Cpu(), Device::Cuda(0)),
                         [](const ::testing::TestParamInfo<Device>& info) {
                           return info.param.is_cpu() ? std::string("cpu") : std::string("cuda");
                         });

TEST(ProfilerWithoutGpuTest, ACudaProfilerNeedsAGpu) {
  if (cuda::DeviceCount() > 0) GTEST_SKIP() << "a GPU is present";
  EXPECT_FALSE(Profiler::Create(Device::Cuda(0)).ok());
}

TEST(OpFamilyTest, NamesAreSnakeCase) {
  const char* expected[kNumOpFamilies] = {"attention", "gemm",      "expert_gemm",   "router",
                                          "permute",   "norm",      "activation",    "embedding",
                                          "loss",      "optimizer", "communication", "other"};
  for (int f = 0; f < kNumOpFamilies; ++f) {
    EXPECT_EQ(OpFamilyName(static_cast<OpFamily>(f)), expected[f]);
  }
}

StepProfile Synthetic(double scale) {
  StepProfile p;
  p.family_ms[Index(OpFamily::kExpertGemm)] = 60 * scale;
  p.family_ms[Index(OpFamily::kAttention)] = 25 * scale;
  p.family_ms[Index(OpFamily::kCommunication)] = 5 * scale;
  p.calls[Index(OpFamily::kExpertGemm)] = 32;
  p.calls[Index(OpFamily::kAttention)] = 16;
  p.calls[Index(OpFamily::kCommunication)] = 1;
  p.calls[Index(OpFamily::kPermute)] = 4;  // called, but no measurable time
  p.family_layer_ms[{Index(OpFamily::kExpertGemm), 0}] = 60 * scale;
  p.unattributed_ms = 10 * scale;
  p.step_ms = 100 * scale;
  return p;
}

TEST(ProfileSumTest, SumsEveryField) {
  const StepProfile sum = SumProfiles({Synthetic(1), Synthetic(2)});
  EXPECT_DOUBLE_EQ(sum.step_ms, 300);
  EXPECT_DOUBLE_EQ(sum.unattributed_ms, 30);
  EXPECT_DOUBLE_EQ(sum.family_ms[Index(OpFamily::kExpertGemm)], 180);
  EXPECT_EQ(sum.calls[Index(OpFamily::kAttention)], 32);
  EXPECT_DOUBLE_EQ(sum.family_layer_ms.at({Index(OpFamily::kExpertGemm), 0}), 180);
  EXPECT_EQ(SumProfiles({}).step_ms, 0);
}

TEST(ProfileTableTest, ListsEveryFamilyWithTimeOrCallsThenIdleAndStep) {
  const StepProfile sum = SumProfiles({Synthetic(1), Synthetic(1)});
  const std::string table = FormatProfileTable(sum, /*steps=*/2);
  for (const char* row : {"expert_gemm", "attention", "communication", "permute",
                          "unattributed (idle or unscoped)", "step"}) {
    EXPECT_NE(table.find(row), std::string::npos) << row << "\n" << table;
  }
  for (const char* absent : {"norm", "optimizer", "router", "embedding"}) {
    EXPECT_EQ(table.find(absent), std::string::npos) << absent << "\n" << table;
  }
  // Per step, most time first, the last rows in their place.
  EXPECT_NE(table.find("60.000"), std::string::npos) << table;
  EXPECT_NE(table.find("60.0%"), std::string::npos) << table;
  EXPECT_NE(table.find("16.0"), std::string::npos) << table;  // attention calls per step
  EXPECT_LT(table.find("expert_gemm"), table.find("attention"));
  EXPECT_LT(table.find("attention"), table.find("communication"));
  EXPECT_LT(table.find("unattributed"), table.rfind("step"));
  EXPECT_NE(table.find("100.000"), std::string::npos) << table;
  EXPECT_EQ(FormatProfileTable(sum, 2), FormatProfileTable(Synthetic(1), 1));
}

TEST(NvtxRangeTest, IsHarmlessWithoutATool) {
  NvtxRange outer("layer 3 forward");
  { NvtxRange inner("optimizer"); }
  ProfileScope scope(nullptr, OpFamily::kNorm, CpuStream(), 3);
}

}  // namespace
}  // namespace moefold
