// MFU's ingredients: the model FLOPs per token against a hand count (and split by op family so the
// parts add up), the parameter count against the built model, the MFU formula, the peak table (the
// PCIe H100 is not taken for an SXM one), the configured peak winning, and the summary's medians
// leaving out the run's first step.
#include <cmath>

#include "core/model/decoder.h"
#include "core/train/flops.h"
#include "core/train/model_from_config.h"
#include "core/train/peak.h"
#include "core/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/train/trainer_testing.h"

namespace moefold::train {
namespace {

model::ModelSpec TinySpec() {
  auto spec = ModelSpecFromConfig(TinyMoeConfig({}));
  MF_CHECK(spec.ok()) << spec.status();
  return *spec;
}

TEST(FlopsTest, TrainingFlopsMatchAHandCountAndTheFamiliesAddUp) {
  const model::ModelSpec spec = TinySpec();  // configs/tiny_moe.yaml
  // h 128, 4 heads × 32 (hq 128), 2 KV heads (hkv 64), V 257, dense FFN 512 in layer 0, layers
  // 1-3 MoE with 8 experts of 256, top-2, no shared expert; S = 128.
  const double h = 128, hq = 128, hkv = 64, v = 257, s = 128;
  const double attn_proj = h * (hq + 2 * hkv) + hq * h;
  const double macs = h * v + 4 * attn_proj + 3 * h * 512 + 3 * (2 * 3 * h * 256 + h * 8);
  const double expected = 6 * macs + 6 * 4 * s * hq;
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(spec, 128), expected);
  double sum = 0;
  const auto by_family = TrainingFlopsPerTokenByFamily(spec, 128);
  for (const auto& [family, flops] : by_family) sum += flops;
  EXPECT_DOUBLE_EQ(sum, expected);
  EXPECT_DOUBLE_EQ(by_family.at("expert_gemm"), 6 * 3 * 2 * 3 * h * 256);
  EXPECT_DOUBLE_EQ(by_family.at("attention"), 6 * 4 * s * hq);
  EXPECT_DOUBLE_EQ(by_family.at("router"), 6 * 3 * h * 8);
}

TEST(FlopsTest, ParameterCountEqualsTheBuiltModel) {
  const model::ModelSpec spec = TinySpec();
  ParameterSet params;
  model::Decoder decoder(spec, model::ModelParallel{}, &params);
  EXPECT_EQ(CountParameters(spec).total, params.NumElements());
  EXPECT_EQ(CountParameters(spec).total, 2822528);  // the quick start's "2.82 M"
}

TEST(FlopsTest, MfuIsModelFlopsOverDevicesTimesPeak) {
  EXPECT_DOUBLE_EQ(Mfu(6e9, 1e5, 4, 989e12), 6e9 * 1e5 / (4 * 989e12));
  EXPECT_EQ(Mfu(6e9, 1e5, 4, 0), 0);
}

TEST(PeakTest, TheTableKnowsTheVariantsAndTheDtype) {
  EXPECT_EQ(GpuPeakTflops("NVIDIA H100 80GB HBM3", DType::kBF16), 989);
  EXPECT_EQ(GpuPeakTflops("NVIDIA H100 PCIe", DType::kBF16), 756);
  EXPECT_EQ(GpuPeakTflops("NVIDIA H200", DType::kFp8E4M3), 1979);
  EXPECT_EQ(GpuPeakTflops("NVIDIA A100-SXM4-80GB", DType::kFp8E4M3), 0);  // no FP8 units
  EXPECT_EQ(GpuPeakTflops("NVIDIA H100 80GB HBM3", DType::kF32), 67);
  EXPECT_EQ(GpuPeakTflops("Some Future GPU", DType::kBF16), 0);
}

TEST(PeakTest, AConfiguredPeakWinsAndTheCpuProbeIsNamed) {
  const Peak configured = ResolvePeak(123.0f, Device::Cpu(), DType::kF32);
  EXPECT_EQ(configured.tflops, 123.0f);
  EXPECT_EQ(configured.source, "train.peak_tflops");
  const Peak probe = ResolvePeak(0, Device::Cpu(), DType::kF32);
  EXPECT_GT(probe.tflops, 0);
  EXPECT_NE(probe.source.find("cpu gemm probe"), std::string::npos);
}

TEST(SummaryTest, MediansLeaveOutTheFirstStep) {
  std::vector<StepResult> steps(4);
  const double times[] = {9.0, 1.0, 3.0, 2.0};
  for (int i = 0; i < 4; ++i) {
    steps[i].step_time_s = times[i];
    steps[i].forward_s = times[i] / 3;
    steps[i].comm_exposed_s = {{"ep", 0.1}, {"dp-cp", 0.2 * i}};
  }
  TrainSummary summary;
  SummariseSteps(steps, {0.9, 0.1, NAN, 0.3}, &summary);
  EXPECT_DOUBLE_EQ(summary.median_step_s, 2.0);        // of 1, 3, 2
  EXPECT_DOUBLE_EQ(summary.median_forward_s, 2.0 / 3);
  EXPECT_NEAR(summary.median_comm_exposed_s, 0.1 + 0.4, 1e-12);  // of 0.3, 0.5, 0.7
  EXPECT_DOUBLE_EQ(summary.mfu, 0.2);                  // of 0.1, 0.3 (NaN = unknown)
}

}  // namespace
}  // namespace moefold::train
