// Loss-based sample reweighting (see reweighting.h): strategy scores, min–max normalisation, the
// reference micro-batch softmax and the global-population reweighter with deferred normaliser.
#include "optim/reweighting.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace moefold::optim {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

absl::Status CheckTemperature(absl::string_view field, float value) {
  if (value >= kMinTemperature && std::isfinite(value)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "reweighting: ", field, " must be >= ", kMinTemperature, " (and finite), got ", value));
}

}  // namespace

absl::StatusOr<Strategy> ParseStrategy(absl::string_view name) {
  if (name == "none") return Strategy::kNone;
  if (name == "linupper") return Strategy::kLinUpper;
  if (name == "upper") return Strategy::kUpper;
  if (name == "quadratic") return Strategy::kQuadratic;
  if (name == "extremes") return Strategy::kExtremes;
  return absl::InvalidArgumentError(
      absl::StrCat("reweighting: unknown strategy \"", name,
                   "\" (expected none, linupper, upper, quadratic or extremes)"));
}

absl::string_view StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kNone:
      return "none";
    case Strategy::kLinUpper:
      return "linupper";
    case Strategy::kUpper:
      return "upper";
    case Strategy::kQuadratic:
      return "quadratic";
    case Strategy::kExtremes:
      return "extremes";
  }
  return "?";
}

absl::StatusOr<Population> ParsePopulation(absl::string_view name) {
  if (name == "global") return Population::kGlobal;
  if (name == "microbatch") return Population::kMicroBatch;
  return absl::InvalidArgumentError(absl::StrCat("reweighting: unknown population \"", name,
                                                 "\" (expected global or microbatch)"));
}

absl::Status ValidateReweighting(const ReweightingOptions& o) {
  if (o.strategy != Strategy::kNone)
    MF_RETURN_IF_ERROR(CheckTemperature("temperature", o.temperature));
  if (o.warmup_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("reweighting: warmup_steps must be >= 0, got ", o.warmup_steps));
  }
  if (o.warmup_temperature != 0.0f) {
    MF_RETURN_IF_ERROR(CheckTemperature("warmup_temperature (0 = uniform)", o.warmup_temperature));
  }
  return absl::OkStatus();
}

float StrategyScore(Strategy strategy, float h) {
  switch (strategy) {
    case Strategy::kNone:
      return 1.0f;
    case Strategy::kLinUpper:
      return std::min(h + 1.0f, 1.0f);
    case Strategy::kUpper:
      return 0.5f * h + 0.5f;
    case Strategy::kQuadratic:
      return 1.0f - h * h;
    case Strategy::kExtremes:
      return std::fabs(h);
  }
  return 1.0f;
}

float NormalizeLoss(float loss, float lo, float hi) {
  const double denom = std::max(static_cast<double>(hi) - static_cast<double>(lo), 1e-6);
  const double h =
      (2.0 * static_cast<double>(loss) - (static_cast<double>(hi) + static_cast<double>(lo))) /
      denom;
  if (std::isnan(h)) return std::numeric_limits<float>::quiet_NaN();
  return static_cast<float>(std::clamp(h, -1.0, 1.0));
}

std::vector<float> MicroBatchWeights(const std::vector<float>& losses, float temperature,
                                     Strategy strategy) {
  MF_CHECK(temperature > 0.0f) << "MicroBatchWeights: temperature must be > 0, got " << temperature;
  const size_t n = losses.size();
  if (n == 0) return {};
  if (strategy == Strategy::kNone) return std::vector<float>(n, 1.0f / static_cast<float>(n));
  float lo = kInf, hi = -kInf;
  for (float l : losses) {
    lo = std::min(lo, l);
    hi = std::max(hi, l);
  }
  std::vector<double> logits(n);
  double max_logit = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < n; ++i) {
    logits[i] = StrategyScore(strategy, NormalizeLoss(losses[i], lo, hi)) / double{temperature};
    max_logit = std::max(max_logit, logits[i]);
  }
  double z = 0.0;
  for (double& x : logits) {
    x = std::exp(x - max_logit);
    z += x;
  }
  std::vector<float> weights(n);
  for (size_t i = 0; i < n; ++i) weights[i] = static_cast<float>(logits[i] / z);
  return weights;
}

SampleReweighter::SampleReweighter(const ReweightingOptions& options) : options_(options) {
  const absl::Status status = ValidateReweighting(options);
  MF_CHECK(status.ok()) << "SampleReweighter: " << status.message();
}

void SampleReweighter::BeginStep(int64_t step) {
  MF_CHECK(!in_step_) << "SampleReweighter: BeginStep(" << step << ") before EndStep of step "
                      << step_;
  MF_CHECK_GE(step, 0) << "SampleReweighter: steps are 0-based";
  in_step_ = true;
  step_ = step;
  const bool warmup = step < options_.warmup_steps;
  temperature_ = warmup ? options_.warmup_temperature : options_.temperature;
  uniform_ = options_.strategy == Strategy::kNone || !state_.has_range || temperature_ == 0.0f;
  local_z_ = 0.0;
  local_min_ = kInf;
  local_max_ = -kInf;
  local_count_ = 0;
}

float SampleReweighter::Weight(float sample_loss) {
  MF_CHECK(in_step_) << "SampleReweighter: Weight() outside BeginStep/EndStep";
  if (std::isfinite(sample_loss)) {
    local_min_ = std::min(local_min_, sample_loss);
    local_max_ = std::max(local_max_, sample_loss);
  }
  float u = 1.0f;
  if (!uniform_) {
    const float h = NormalizeLoss(sample_loss, state_.range_min, state_.range_max);
    const double f = StrategyScore(options_.strategy, h);
    u = static_cast<float>(std::exp((f - 1.0) / double{temperature_}));
  }
  local_z_ += u;
  ++local_count_;
  return u;
}

void SampleReweighter::EndStep(double global_z, float global_min, float global_max) {
  MF_CHECK(in_step_) << "SampleReweighter: EndStep() without BeginStep";
  in_step_ = false;
  global_z_ = global_z;
  state_.last_step = step_;
  if (global_min <= global_max) {
    state_.has_range = true;
    state_.range_min = global_min;
    state_.range_max = global_max;
  }
}

std::vector<float> SampleReweighter::MicroBatchWeightsForStep(
    const std::vector<float>& losses) const {
  MF_CHECK(in_step_) << "SampleReweighter: MicroBatchWeightsForStep() outside a step";
  if (options_.strategy == Strategy::kNone || temperature_ == 0.0f) {
    return MicroBatchWeights(losses, 1.0f, Strategy::kNone);
  }
  return MicroBatchWeights(losses, temperature_, options_.strategy);
}

void SampleReweighter::set_state(const ReweightingState& state) {
  MF_CHECK(!in_step_) << "SampleReweighter: set_state() inside step " << step_;
  state_ = state;
}

}  // namespace moefold::optim
