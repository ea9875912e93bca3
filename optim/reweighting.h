// Loss-based sample reweighting with deferred normalisation (docs/FORMULAS.md §6).
// Default population = the global batch: a sample's unnormalised weight u depends only on its own
// detached loss and the PREVIOUS step's global loss range, so it is known as soon as the loss is;
// the caller accumulates u·∇ℓ and divides the summed gradients once by Z = Σu (reduced over DP×CP)
// before clipping. Hence weights equal softmax(f(h)/r) over the global batch for every layout and
// micro-batch size. Population kMicroBatch is the reference semantics, a softmax within each
// micro-batch (see MicroBatchWeights).
//
//   reweighter.BeginStep(step);
//   for each micro-batch: loss_mb = Σᵢ reweighter.Weight(ℓᵢ) · ℓᵢ;  backward(loss_mb)
//   Z, lo, hi = AllReduce(LocalNormaliser(), SUM), AllReduce(LocalMin(), MIN), (LocalMax(), MAX)
//   reweighter.EndStep(Z, lo, hi);  ScaleGrads(grads, 1/Z);  logged loss = Σ u·ℓ / Z
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moefold::optim {

enum class Strategy { kNone, kLinUpper, kUpper, kQuadratic, kExtremes };
enum class Population { kGlobal, kMicroBatch };

// "none", "linupper", "upper", "quadratic", "extremes" (the config's spelling); InvalidArgument
// naming the unknown value otherwise.
absl::StatusOr<Strategy> ParseStrategy(absl::string_view name);
absl::string_view StrategyName(Strategy strategy);
// "global" or "microbatch"; InvalidArgument otherwise.
absl::StatusOr<Population> ParsePopulation(absl::string_view name);

// Temperatures below this make e^{1/r} leave the f32 range; rejected by ValidateReweighting.
inline constexpr float kMinTemperature = 0.02f;

struct ReweightingOptions {
  Strategy strategy = Strategy::kNone;
  float temperature = 1.0f;         // r: max/min weight ratio ≤ e^{1/r}
  int64_t warmup_steps = 0;         // steps 0 … warmup_steps−1 are warm-up
  float warmup_temperature = 0.0f;  // r during warm-up; 0 = uniform weights during warm-up
  Population population = Population::kGlobal;
};

// InvalidArgument naming the field: temperature < kMinTemperature (unless strategy none),
// warmup_steps < 0, warmup_temperature neither 0 nor ≥ kMinTemperature.
absl::Status ValidateReweighting(const ReweightingOptions& options);

// f(h) ∈ [0, 1] for h ∈ [−1, 1]: none 1 (uniform), linupper min(h + 1, 1), upper 0.5h + 0.5,
// quadratic 1 − h², extremes |h|.
float StrategyScore(Strategy strategy, float h);

// Min–max normalisation to [−1, 1]: h = (2ℓ − (hi + lo)) / max(hi − lo, 1e-6), computed in f64 and
// clamped to [−1, 1] (a loss outside the range saturates at its edge, which keeps f in [0, 1] and
// the weight ratio bound e^{1/r} when the range is the previous step's). NaN stays NaN.
float NormalizeLoss(float loss, float lo, float hi);

// Reference semantics (population kMicroBatch, docs/FORMULAS.md §6.6): the normalised weights
// softmax(f(hᵢ)/r) of `losses` (one micro-batch's; the trainer passes each rank's own), h from the
// range of these same losses. Sums to 1 (f64 softmax with max subtraction, rounded to f32);
// strategy none gives 1/N each; empty input gives an empty vector. temperature > 0 (checked). With
// M micro-batches per step the caller averages the M micro-batch losses Σᵢ wᵢℓᵢ.
std::vector<float> MicroBatchWeights(const std::vector<float>& losses, float temperature,
                                     Strategy strategy);

// What a checkpoint stores: the range the next step uses and the last step ended.
struct ReweightingState {
  bool has_range = false;  // false before the first EndStep: the next step is uniform
  float range_min = 0.0f;
  float range_max = 0.0f;
  int64_t last_step = -1;  // step of the last EndStep
};

// Population kGlobal (see the file comment). One instance per rank; BeginStep / Weight… / EndStep
// per optimizer step (checked).
class SampleReweighter {
 public:
  explicit SampleReweighter(const ReweightingOptions& options);  // options must validate (checked)

  // Starts `step` (0-based; the warm-up is steps < warmup_steps) and clears the local sums.
  void BeginStep(int64_t step);

  // The unnormalised weight of a sample with detached loss ℓ:
  //   u = exp((f(h) − 1) / r),  h = NormalizeLoss(ℓ, previous step's global range),
  // r = temperature (warmup_temperature during warm-up). u is exactly 1.0f when the step is
  // uniform: strategy none, no previous range (the first step), or warm-up with warmup_temperature
  // == 0. The −1 shift (softmax is shift-invariant, so normalised weights are exactly those of
  // exp(f/r)) keeps u ∈ [e^{−1/r}, 1]: no overflow, and the accumulated u·∇ℓ is never larger than
  // with uniform weights, which low-precision gradients appreciate.
  // Also records ℓ in this step's local min/max (finite losses only, so one NaN cannot poison the
  // next range) and adds u to the local normaliser.
  float Weight(float sample_loss);

  // This rank's partial sums for the current step (sum/min/max-reduce them across ranks):
  double LocalNormaliser() const { return local_z_; }  // Σu (0 with no samples)
  float LocalMin() const { return local_min_; }        // +inf with no (finite) samples
  float LocalMax() const { return local_max_; }        // −inf with no (finite) samples
  int64_t LocalCount() const { return local_count_; }  // samples weighted this step

  // Ends the step with the reduced Z, min and max; stores the range for the next step (kept
  // unchanged when no finite loss was seen anywhere: global_min > global_max).
  void EndStep(double global_z, float global_min, float global_max);
  double GlobalNormaliser() const { return global_z_; }  // the Z of the last EndStep

  // For population kMicroBatch: MicroBatchWeights with this step's temperature, or 1/N each when
  // the step is uniform (strategy none, warm-up with warmup_temperature == 0). No previous range is
  // needed, so the first step is not uniform here.
  std::vector<float> MicroBatchWeightsForStep(const std::vector<float>& losses) const;

  bool StepIsUniform() const { return uniform_; }  // of the current step
  float StepTemperature() const { return temperature_; }

  const ReweightingOptions& options() const { return options_; }
  const ReweightingState& state() const { return state_; }
  void set_state(const ReweightingState& state);  // only between steps (checked)

 private:
  ReweightingOptions options_;
  ReweightingState state_;
  bool in_step_ = false;
  int64_t step_ = -1;
  bool uniform_ = true;
  float temperature_ = 1.0f;
  double local_z_ = 0.0;
  float local_min_ = 0.0f;
  float local_max_ = 0.0f;
  int64_t local_count_ = 0;
  double global_z_ = 0.0;
};

}  // namespace moefold::optim
