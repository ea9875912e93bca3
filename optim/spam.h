// SPAM and Stable-SPAM: gradient transforms in front of AdamW that keep a run from diverging on
// gradient spikes. Both reset AdamW's moments m, v every reset_interval steps (the bias-correction
// step count runs on). With t the 1-based optimizer step and phase = (t − 1) mod reset_interval:
//
// SPAM: g ← sign(g)·sqrt(θ·v) element-wise where g² > θ·v (v: AdamW's second moment before this
//   step), except in the first clip_delay steps of a phase (v is zero or young there); after each
//   reset (not at the start) the learning rate is scaled by a cosine ramp from warmup_start to 1
//   over warmup_steps.
// Stable-SPAM, per parameter tensor (state m_max, m_n, v_n, starting at 0, never reset):
//   AdaClip: m_max ← γ₃·m_max + (1−γ₃)·max|g|, m̂_max = m_max/(1−γ₃ᵗ); every entry with |g| > m̂_max
//     is scaled by m̂_max/max|g| (so the largest lands on m̂_max).
//   AdaGN, on the clipped g: m_n ← γ₁·m_n + (1−γ₁)‖g‖, v_n ← γ₂·v_n + (1−γ₂)‖g‖², bias-corrected
//     with γ₁ᵗ, γ₂ᵗ; g ← g/‖g‖ · m̂_n/(sqrt(v̂_n) + eps)  (g stays 0 when ‖g‖ = 0).
// The g here is the gradient AdamW would see: the reduced sum × 1/Z × the global clip factor. The
// max|g| and ‖g‖ of a tensor are over all its elements, whichever ranks hold them: the pieces'
// statistics are reduced over the ZeRO-1 group of its buffer and over the model-parallel group its
// elements differ in (TP for dense weights, ETP×EP for experts); pipeline stages hold different
// tensors and need nothing. Every layout therefore transforms a tensor identically (within the f32
// rounding of the reduced sums).
//
//   SpamTransform spam(options, sync.get(), groups.sync);
//   if (SpamResetsAt(options, t)) { zero AdamW's m and v }
//   MF_RETURN_IF_ERROR(spam.Apply(t, grad_scale, second_moments, stream));  // grads ← final g
//   adamw.Step(lr * SpamLrScale(options, t), ones, stream);
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "parallel/grad_sync.h"

namespace moefold::optim {

enum class SpamKind { kSpam, kStableSpam };

struct SpamOptions {
  SpamKind kind = SpamKind::kStableSpam;
  int64_t reset_interval = 500;  // ΔT: moments reset every ΔT steps; 0 = never
  float theta = 5000;            // SPAM spike threshold θ
  int64_t clip_delay = 20;       // SPAM: steps after a reset (and at the start) without the clip
  int64_t warmup_steps = 150;    // SPAM: cosine lr ramp after each reset; 0 = none
  float warmup_start = 0.01f;    // SPAM: the ramp's first scale
  float gamma1 = 0.7f;           // Stable-SPAM AdaGN: EMA of ‖g‖
  float gamma2 = 0.9f;           // Stable-SPAM AdaGN: EMA of ‖g‖²
  float gamma3 = 0.999f;         // Stable-SPAM AdaClip: EMA of max|g|
  float eps = 1e-8f;             // Stable-SPAM AdaGN denominator
};

// Whether AdamW's m and v are zeroed before step t (1-based): t − 1 a positive multiple of ΔT.
bool SpamResetsAt(const SpamOptions& options, int64_t step);
// SPAM's learning-rate factor at step t: warmup_start + (1 − warmup_start)·(1 − cos(π·k/W))/2 for
// k = phase < W = warmup_steps after a reset, else 1. Always 1 for Stable-SPAM.
float SpamLrScale(const SpamOptions& options, int64_t step);
// Whether SPAM's spike clip applies at step t: phase >= clip_delay.
bool SpamClipsAt(const SpamOptions& options, int64_t step);

// One tensor's Stable-SPAM statistics.
struct SpamTensorState {
  double m_max = 0;   // EMA of max|g|
  double m_norm = 0;  // EMA of ‖g‖
  double v_norm = 0;  // EMA of ‖g‖²
};

// AdaClip at step t for a tensor whose max|g| is `max_abs`: updates m_max and returns the clip
// (threshold c = m̂_max, factor f = m̂_max / max_abs); f = 1 when max_abs <= c.
std::pair<float, float> AdaClip(const SpamOptions& options, int64_t step, double max_abs,
                                SpamTensorState* state);
// AdaGN at step t for the clipped tensor's ‖g‖ = `norm`: updates m_norm, v_norm and returns the
// factor m̂_n / ((sqrt(v̂_n) + eps)·‖g‖) (1 when ‖g‖ = 0).
float AdaGn(const SpamOptions& options, int64_t step, double norm, SpamTensorState* state);

class SpamTransform {
 public:
  // `sync` (its params flattened, its reductions finished before each Apply) and the groups it was
  // built with; both must outlive the transform. The state has one entry per parameter of the set.
  SpamTransform(const SpamOptions& options, parallel::GradSync* sync,
                const parallel::GradSyncGroups& groups);

  // Rewrites every owned gradient (GradSync::OwnedGrads) into the g AdamW must take at step t with
  // a grad_scale of 1: g = grad · grad_scale[0] ((1) f32 on the gradients' device), then SPAM's
  // spike clip against second_moments[i] (AdamW's v of the elements of OwnedGrads()[i], same
  // order; unused by Stable-SPAM, may be empty then) or Stable-SPAM's AdaClip and AdaGN. Stable-
  // SPAM waits for the device twice (the statistics come to the host) and exchanges host scalars.
  absl::Status Apply(int64_t step, const Tensor& grad_scale,
                     const std::vector<Tensor*>& second_moments, Stream& stream);

  const SpamOptions& options() const { return options_; }
  // Per parameter of the set, in its order (checkpoint state).
  std::vector<SpamTensorState>& state() { return state_; }

 private:
  // One owned gradient tensor: the parameter segments inside it.
  struct Piece {
    Tensor* grad;
    int buffer;
    int64_t begin, numel;         // the owned range of the bucket's flat buffer
    std::vector<int64_t> params;  // state index of each segment
    Tensor segments;              // (S, 2) i64 [begin, end) within grad, on its device
  };
  // Builds pieces_ from the buckets' owned gradients of this step (unchanged ones are kept).
  void RefreshPieces();
  // Per-segment (max|g|, Σg²) of every piece, combined per tensor over the ranks holding its
  // pieces: maxima (op kMax) and sums (kSum) indexed by state index.
  absl::Status TensorStats(const Tensor& grad_scale, const std::vector<Tensor>& clips,
                           std::vector<float>* max_abs, std::vector<float>* sum_squares,
                           Stream& stream);

  SpamOptions options_;
  parallel::GradSync* sync_;
  parallel::GradSyncGroups groups_;
  std::vector<Piece> pieces_;
  std::vector<SpamTensorState> state_;
};

}  // namespace moefold::optim
