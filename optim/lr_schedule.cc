// Learning-rate schedules (see lr_schedule.h). Computed in f64 and rounded once to f32, so the
// value of a step never depends on how many steps came before it.
#include "optim/lr_schedule.h"

#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace moefold::optim {
namespace {

enum class Kind { kCosine, kWsd, kConstant, kUnknown };

Kind ParseKind(absl::string_view kind) {
  if (kind == "cosine") return Kind::kCosine;
  if (kind == "wsd") return Kind::kWsd;
  if (kind == "constant") return Kind::kConstant;
  return Kind::kUnknown;
}

int64_t WsdDecaySteps(const LrScheduleOptions& o) {
  return std::llround(static_cast<double>(o.decay_fraction) * static_cast<double>(o.total_steps));
}

}  // namespace

absl::Status ValidateLrSchedule(const LrScheduleOptions& o) {
  const Kind kind = ParseKind(o.kind);
  if (kind == Kind::kUnknown) {
    return absl::InvalidArgumentError(absl::StrCat("lr schedule: unknown kind \"", o.kind,
                                                   "\" (expected cosine, wsd or constant)"));
  }
  if (!(o.lr >= 0.0f) || !std::isfinite(o.lr)) {
    return absl::InvalidArgumentError(absl::StrCat("lr schedule: lr must be >= 0, got ", o.lr));
  }
  if (!(o.min_lr >= 0.0f) || o.min_lr > o.lr) {
    return absl::InvalidArgumentError(
        absl::StrCat("lr schedule: min_lr must be in [0, lr = ", o.lr, "], got ", o.min_lr));
  }
  if (o.total_steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("lr schedule: total_steps must be >= 1, got ", o.total_steps));
  }
  if (o.warmup_steps < 0 || o.warmup_steps > o.total_steps) {
    return absl::InvalidArgumentError(absl::StrCat("lr schedule: warmup_steps must be in [0, ",
                                                   o.total_steps, "], got ", o.warmup_steps));
  }
  if (kind == Kind::kWsd) {
    if (!(o.decay_fraction >= 0.0f && o.decay_fraction <= 1.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("lr schedule: decay_fraction must be in [0, 1], got ", o.decay_fraction));
    }
    const int64_t decay = WsdDecaySteps(o);
    if (o.warmup_steps + decay > o.total_steps) {
      return absl::InvalidArgumentError(
          absl::StrCat("lr schedule: warmup_steps (", o.warmup_steps, ") + decay steps (", decay,
                       " = decay_fraction ", o.decay_fraction, " x ", o.total_steps,
                       ") exceed total_steps (", o.total_steps, ")"));
    }
  }
  return absl::OkStatus();
}

float LearningRate(const LrScheduleOptions& o, int64_t step) {
  MF_CHECK_GE(step, 0) << "LearningRate: steps are 0-based";
  const Kind kind = ParseKind(o.kind);
  MF_CHECK(kind != Kind::kUnknown) << "LearningRate: unknown schedule kind " << o.kind;
  const double lr = o.lr, min_lr = o.min_lr;
  const int64_t n = step + 1;  // Megatron counts the step being taken
  if (n <= o.warmup_steps) {
    return static_cast<float>(lr * static_cast<double>(n) / static_cast<double>(o.warmup_steps));
  }
  switch (kind) {
    case Kind::kConstant:
      return o.lr;
    case Kind::kCosine: {
      if (n >= o.total_steps) return o.min_lr;
      const double ratio = static_cast<double>(n - o.warmup_steps) /
                           static_cast<double>(o.total_steps - o.warmup_steps);
      return static_cast<float>(min_lr +
                                0.5 * (lr - min_lr) * (1.0 + std::cos(std::numbers::pi * ratio)));
    }
    case Kind::kWsd: {
      const int64_t decay = WsdDecaySteps(o);
      const int64_t decay_start = o.total_steps - decay;
      if (n <= decay_start) return o.lr;
      if (n >= o.total_steps) return o.min_lr;
      const double ratio = static_cast<double>(n - decay_start) / static_cast<double>(decay);
      return static_cast<float>(min_lr + (lr - min_lr) * (1.0 - std::sqrt(ratio)));
    }
    case Kind::kUnknown:
      break;
  }
  return o.lr;  // unreachable: kUnknown was checked above
}

}  // namespace moefold::optim
