// SPAM and Stable-SPAM: the per-tensor host state and the orchestration of the ops/spam.h passes
// over the owned gradient pieces. The EMAs run in f64 on the host (a few scalars per tensor); only
// the per-step factors go to the device, as f32.
#include "optim/spam.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <unordered_map>

#include "core/status.h"
#include "ops/spam.h"
#include "parallel/communicator.h"

namespace moefold::optim {
namespace {

int64_t Phase(const SpamOptions& options, int64_t step) {
  return options.reset_interval > 0 ? (step - 1) % options.reset_interval : step - 1;
}

}  // namespace

bool SpamResetsAt(const SpamOptions& options, int64_t step) {
  return options.reset_interval > 0 && step > 1 && (step - 1) % options.reset_interval == 0;
}

float SpamLrScale(const SpamOptions& options, int64_t step) {
  if (options.kind != SpamKind::kSpam || options.reset_interval <= 0) return 1.0f;
  // The start is no reset: the schedule's own warm-up covers it.
  if (step - 1 < options.reset_interval) return 1.0f;
  const int64_t k = Phase(options, step);
  if (k >= options.warmup_steps) return 1.0f;
  const double ramp =
      (1.0 - std::cos(std::numbers::pi * static_cast<double>(k) / options.warmup_steps)) / 2;
  return static_cast<float>(options.warmup_start + (1.0 - options.warmup_start) * ramp);
}

bool SpamClipsAt(const SpamOptions& options, int64_t step) {
  return options.theta > 0 && Phase(options, step) >= options.clip_delay;
}

std::pair<float, float> AdaClip(const SpamOptions& options, int64_t step, double max_abs,
                                SpamTensorState* state) {
  const double g3 = options.gamma3;
  state->m_max = g3 * state->m_max + (1 - g3) * max_abs;
  const double threshold = state->m_max / (1 - std::pow(g3, static_cast<double>(step)));
  const double factor = max_abs > threshold ? threshold / max_abs : 1.0;
  return {static_cast<float>(threshold), static_cast<float>(factor)};
}

float AdaGn(const SpamOptions& options, int64_t step, double norm, SpamTensorState* state) {
  const double g1 = options.gamma1, g2 = options.gamma2, t = static_cast<double>(step);
  state->m_norm = g1 * state->m_norm + (1 - g1) * norm;
  state->v_norm = g2 * state->v_norm + (1 - g2) * norm * norm;
  if (!(norm > 0)) return 1.0f;
  const double m_hat = state->m_norm / (1 - std::pow(g1, t));
  const double v_hat = state->v_norm / (1 - std::pow(g2, t));
  return static_cast<float>(m_hat / ((std::sqrt(v_hat) + options.eps) * norm));
}

SpamTransform::SpamTransform(const SpamOptions& options, parallel::GradSync* sync,
                             const parallel::GradSyncGroups& groups)
    : options_(options), sync_(sync), groups_(groups) {
  state_.resize(sync->params()->params().size());
}

void SpamTransform::RefreshPieces() {
  // The owned gradients are (re)assigned as the step's reductions launch: build the segments from
  // what this step holds, again only when a bucket's owned range moved.
  const std::vector<Tensor*> owned = sync_->OwnedGrads();
  std::vector<parallel::GradBucket>& buckets = sync_->buckets();
  MF_CHECK_EQ(owned.size(), buckets.size()) << "SpamTransform: one owned gradient per bucket";
  bool same = pieces_.size() == owned.size();
  for (size_t i = 0; same && i < owned.size(); ++i) {
    same = pieces_[i].begin == buckets[i].shard_begin && pieces_[i].numel == owned[i]->numel();
  }
  if (same) return;
  ParameterSet* set = sync_->params();
  std::unordered_map<const Parameter*, int64_t> index;
  for (const auto& p : set->params()) index.emplace(p.get(), static_cast<int64_t>(index.size()));
  pieces_.clear();
  for (size_t i = 0; i < buckets.size(); ++i) {
    const parallel::GradBucket& bucket = buckets[i];
    const int64_t begin = bucket.shard_begin, end = begin + owned[i]->numel();
    Piece piece{owned[i], bucket.buffer, begin, owned[i]->numel(), {}, {}};
    std::vector<int64_t> ranges;
    for (const FlatSegment& s : set->flat_buffers()[bucket.buffer].segments) {
      const int64_t lo = std::max(begin, s.offset), hi = std::min(end, s.offset + s.numel);
      if (lo >= hi) continue;
      piece.params.push_back(index.at(s.param));
      ranges.push_back(lo - begin);
      ranges.push_back(hi - begin);
    }
    const int64_t count = static_cast<int64_t>(piece.params.size());
    Tensor host = Tensor::Empty({count, 2}, DType::kI64);
    std::copy(ranges.begin(), ranges.end(), host.data<int64_t>());
    piece.segments = host.To(owned[i]->device());
    pieces_.push_back(std::move(piece));
  }
}

absl::Status SpamTransform::TensorStats(const Tensor& grad_scale, const std::vector<Tensor>& clips,
                                        std::vector<float>* max_abs,
                                        std::vector<float>* sum_squares, Stream& stream) {
  const size_t n = state_.size();
  const int num_buffers = static_cast<int>(sync_->params()->flat_buffers().size());
  // Per buffer: the maxima and sums of its tensors (a tensor lives in one buffer).
  std::vector<Tensor> maxes(num_buffers), sums(num_buffers);
  for (int b = 0; b < num_buffers; ++b) {
    maxes[b] = Tensor::Zeros({static_cast<int64_t>(n)}, DType::kF32);
    sums[b] = Tensor::Zeros({static_cast<int64_t>(n)}, DType::kF32);
  }
  std::vector<Tensor> stats;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    Piece& piece = pieces_[i];
    stats.push_back(Tensor::Empty({piece.segments.dim(0), 2}, DType::kF32, piece.grad->device()));
    ops::SegmentGradStats(*piece.grad, grad_scale, piece.segments, clips[i], &stats.back(),
                          stream);
  }
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const Tensor host = stats[i].To(Device::Cpu());
    const float* s = host.data<float>();
    float* m = maxes[pieces_[i].buffer].data<float>();
    float* q = sums[pieces_[i].buffer].data<float>();
    for (size_t k = 0; k < pieces_[i].params.size(); ++k) {
      const int64_t p = pieces_[i].params[k];
      m[p] = std::max(m[p], s[2 * k]);
      q[p] += s[2 * k + 1];
    }
  }
  max_abs->assign(n, 0.0f);
  sum_squares->assign(n, 0.0f);
  for (int b = 0; b < num_buffers; ++b) {
    // Under ZeRO-1 each member of the reducing group owns other elements; model-parallel ranks
    // hold other slices of the TP-split and expert tensors.
    const GradReduction reduction = sync_->params()->flat_buffers()[b].reduction;
    parallel::Communicator* differs =
        reduction == GradReduction::kDenseDataCp || reduction == GradReduction::kTiedCopy
            ? groups_.tp
        : reduction == GradReduction::kExpertData ? groups_.etp_ep
                                                  : nullptr;
    for (parallel::Communicator* comm :
         {sync_->zero1() ? sync_->group_of(b) : nullptr, differs}) {
      if (comm == nullptr || comm->size() == 1) continue;
      MF_RETURN_IF_ERROR(
          parallel::WaitFor(comm->AllReduce(&maxes[b], {.op = parallel::ReduceOp::kMax})));
      MF_RETURN_IF_ERROR(
          parallel::WaitFor(comm->AllReduce(&sums[b], {.op = parallel::ReduceOp::kSum})));
    }
    for (size_t p = 0; p < n; ++p) {
      (*max_abs)[p] = std::max((*max_abs)[p], maxes[b].data<float>()[p]);
      (*sum_squares)[p] += sums[b].data<float>()[p];
    }
  }
  return absl::OkStatus();
}

absl::Status SpamTransform::Apply(int64_t step, const Tensor& grad_scale,
                                  const std::vector<Tensor*>& second_moments, Stream& stream) {
  MF_CHECK_GE(step, 1) << "SpamTransform: step is 1-based";
  RefreshPieces();
  if (options_.kind == SpamKind::kSpam) {
    MF_CHECK_EQ(second_moments.size(), pieces_.size())
        << "SpamTransform: one second moment per owned gradient";
    const float theta = SpamClipsAt(options_, step) ? options_.theta : 0.0f;
    for (size_t i = 0; i < pieces_.size(); ++i) {
      ops::SpamSpikeClip(grad_scale, *second_moments[i], theta, pieces_[i].grad, stream);
    }
    return absl::OkStatus();
  }
  // AdaClip: the clip of each tensor from its global max|g|.
  std::vector<float> max_abs, sum_squares;
  std::vector<Tensor> none(pieces_.size());
  MF_RETURN_IF_ERROR(TensorStats(grad_scale, none, &max_abs, &sum_squares, stream));
  std::vector<std::pair<float, float>> clip(state_.size());
  for (size_t p = 0; p < state_.size(); ++p) {
    clip[p] = AdaClip(options_, step, max_abs[p], &state_[p]);
  }
  std::vector<Tensor> clips;
  for (const Piece& piece : pieces_) {
    std::vector<float> c;
    for (int64_t p : piece.params) {
      c.push_back(clip[p].first);
      c.push_back(clip[p].second);
    }
    clips.push_back(Tensor::FromVector(c, {static_cast<int64_t>(piece.params.size()), 2})
                        .To(piece.grad->device()));
  }
  // AdaGN on the clipped gradient's norm.
  MF_RETURN_IF_ERROR(TensorStats(grad_scale, clips, &max_abs, &sum_squares, stream));
  std::vector<float> scale(state_.size());
  for (size_t p = 0; p < state_.size(); ++p) {
    scale[p] = AdaGn(options_, step, std::sqrt(static_cast<double>(sum_squares[p])), &state_[p]);
  }
  for (Piece& piece : pieces_) {
    std::vector<float> f;
    for (int64_t p : piece.params) {
      f.push_back(clip[p].first);
      f.push_back(clip[p].second);
      f.push_back(scale[p]);
    }
    const Tensor factors = Tensor::FromVector(f, {static_cast<int64_t>(piece.params.size()), 3})
                               .To(piece.grad->device());
    ops::SegmentClipScale(piece.segments, factors, grad_scale, piece.grad, stream);
  }
  return absl::OkStatus();
}

}  // namespace moefold::optim
