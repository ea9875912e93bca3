// Bucketed gradient reduction with optional ZeRO-1 sharding.
#include "parallel/grad_sync.h"

#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "ops/elementwise.h"
#include "ops/quant.h"
#include "ops/reduce.h"

namespace moefold::parallel {
namespace {

int GroupSize(const Communicator* comm) { return comm == nullptr ? 1 : comm->size(); }

// Every member's `value` added in rank order (the same bits on every member); `value` alone
// without a group. The f64 bits travel in an i64 tensor (an all-gather only moves bytes).
absl::StatusOr<double> SumInRankOrder(Communicator* comm, double value) {
  if (IsSingleRank(comm)) return value;
  Tensor mine = Tensor::Empty({1}, DType::kI64);
  std::memcpy(mine.raw_data(), &value, sizeof(double));
  Tensor all = Tensor::Empty({comm->size()}, DType::kI64);
  MF_RETURN_IF_ERROR(WaitFor(comm->AllGather(mine, &all, {})));
  double total = 0;
  for (int i = 0; i < comm->size(); ++i) {
    double member;
    std::memcpy(&member, static_cast<const char*>(all.raw_data()) + i * sizeof(double),
                sizeof(double));
    total += member;
  }
  return total;
}

// A copy of `t` on its device, enqueued on `stream` (no host wait on a GPU).
Tensor CopyOn(const Tensor& t, Stream& stream) {
  Tensor copy = Tensor::Empty(t.shape(), t.dtype(), t.device());
  copy.CopyFromAsync(t, stream);
  return copy;
}

}  // namespace

int64_t GradSync::Alignment(const GradSyncGroups& groups) {
  return std::lcm(std::lcm<int64_t>(GroupSize(groups.dp_cp), GroupSize(groups.tp_cp_dp)),
                  GroupSize(groups.edp));
}

GradSync::GradSync(ParameterSet* params, const GradSyncGroups& groups,
                   const GradSyncOptions& options)
    : params_(params), groups_(groups), options_(options) {
  auto& buffers = params->flat_buffers();
  MF_CHECK(!buffers.empty()) << "GradSync needs ParameterSet::Flatten() first";
  std::vector<int64_t> index_of;  // Parameter* order → index
  const auto& all = params->params();
  buckets_of_param_.resize(all.size());
  for (int b = 0; b < static_cast<int>(buffers.size()); ++b) {
    const FlatBuffer& buffer = buffers[b];
    // Buckets (and, for the quantizers, each member's chunk of a bucket) hold whole compressor
    // blocks, so the blocks are the same whatever the bucket boundaries.
    const int64_t n = GroupSize(group_of(b));
    const int64_t unit = n * (options.ef21.enabled ? options.ef21.compressor.block : 1);
    const int64_t size = buffer.grads.numel();
    MF_CHECK_EQ(size % unit, 0) << "flat buffer not aligned to its group size × compressor block";
    const int64_t target = std::max<int64_t>(unit, options.bucket_elements / unit * unit);
    for (int64_t begin = 0; begin < size; begin += target) {
      GradBucket bucket;
      bucket.buffer = b;
      bucket.begin = begin;
      bucket.end = std::min(size, begin + target);
      buckets_.push_back(std::move(bucket));
    }
  }
  // Which buckets each parameter's segment touches.
  for (int i = 0; i < static_cast<int>(buckets_.size()); ++i) {
    const GradBucket& bucket = buckets_[i];
    for (const FlatSegment& seg : buffers[bucket.buffer].segments) {
      if (seg.offset < bucket.end && seg.offset + seg.numel > bucket.begin) {
        for (size_t p = 0; p < all.size(); ++p) {
          if (all[p].get() == seg.param) buckets_of_param_[p].push_back(i);
        }
      }
    }
  }
  ready_.assign(all.size(), false);
  const Ef21Options& ef = options.ef21;
  if (ef.enabled) {
    MF_CHECK(ef.compressor.block > 0) << "EF21 block size " << ef.compressor.block;
    MF_CHECK(ef.compressor.topk_fraction > 0 && ef.compressor.topk_fraction <= 1)
        << "EF21 Top-K fraction " << ef.compressor.topk_fraction;
    for (float w : ef.rank_weights) MF_CHECK(w > 0) << "EF21-W rank weight " << w << " <= 0";
    for (int b = 0; b < static_cast<int>(buffers.size()); ++b) {
      const int n = GroupSize(group_of(b));
      MF_CHECK(ef.rank_weights.empty() || n == 1 || static_cast<int>(ef.rank_weights.size()) == n)
          << "EF21-W has " << ef.rank_weights.size() << " rank weights for a group of " << n;
    }
    // The owner weighs member i's piece by n·wᵢ (all groups have n = rank_weights.size() members).
    if (!ef.rank_weights.empty()) {
      const float members = static_cast<float>(ef.rank_weights.size());
      std::vector<float> weights;
      for (float w : ef.rank_weights) weights.push_back(members * w);
      owner_weights_ = Tensor::FromVector(weights, {static_cast<int64_t>(weights.size())})
                           .To(buffers[0].grads.device());
    }
  }
}

Communicator* GradSync::group_of(int buffer) {
  switch (params_->flat_buffers()[buffer].reduction) {
    case GradReduction::kDenseDataCp:
    case GradReduction::kReplicatedDataCp:
    case GradReduction::kTiedCopy: return groups_.dp_cp;
    case GradReduction::kDenseDataCpTp: return groups_.tp_cp_dp;
    case GradReduction::kExpertData: return groups_.edp;
  }
  return nullptr;
}

void GradSync::BeginStep(int64_t step) {
  const Ef21Options& ef = options_.ef21;
  mode_ = Mode::kPlain;
  if (ef.enabled && step >= ef.warm_start_steps) {
    const int64_t since = step - ef.warm_start_steps;
    const bool anchor = since == 0 || (ef.reanchor_every > 0 && since % ef.reanchor_every == 0);
    mode_ = anchor ? Mode::kAnchor : Mode::kCompressed;
  }
  for (GradBucket& bucket : buckets_) {
    bucket.pending = 0;
    bucket.work.reset();
    bucket.mode = static_cast<int>(Mode::kPlain);
  }
  for (const auto& list : buckets_of_param_) {
    for (int b : list) ++buckets_[b].pending;
  }
  ready_.assign(ready_.size(), false);
  bytes_sent_ = 0;
  uncompressed_bytes_ = 0;
}

void GradSync::ResetState() {
  for (GradBucket& bucket : buckets_) bucket.h = bucket.s = Tensor();
}

float GradSync::RankScale(const Communicator* comm) const {
  const auto& w = options_.ef21.rank_weights;
  if (w.empty() || comm == nullptr) return 1.0f;
  return 1.0f / (static_cast<float>(comm->size()) * w[comm->rank()]);
}

absl::Status GradSync::Launch(GradBucket& bucket) {
  if (bucket.work || bucket.pending < 0) return absl::OkStatus();
  // A run that starts between anchors (resumed off the anchor schedule) has no EF state yet: such a
  // bucket anchors now instead.
  Mode mode = mode_;
  if (mode == Mode::kCompressed && !(bucket.h.defined() && bucket.h.numel() > 0)) {
    mode = Mode::kAnchor;
  }
  bucket.mode = static_cast<int>(mode);
  Communicator* comm = group_of(bucket.buffer);
  Tensor grads = params_->flat_buffers()[bucket.buffer].grads.Slice(bucket.begin, bucket.end);
  const int64_t n = GroupSize(comm), size = bucket.end - bucket.begin, chunk = size / n;
  if (comm == nullptr || n == 1) {
    bucket.shard = grads;
    bucket.shard_begin = bucket.begin;
    bucket.pending = -1;  // done, nothing to wait for
    return absl::OkStatus();
  }
  // What the plain reduction sends: a ring reduce-scatter (n−1)/n of the bucket, all-reduce twice
  // that.
  const int64_t plain = (options_.zero1 ? 1 : 2) * (n - 1) * chunk * 4;
  uncompressed_bytes_ += plain;
  if (mode == Mode::kCompressed) return LaunchCompressed(bucket, comm);
  if (mode == Mode::kAnchor) {
    // h restarts from this step's exact (scaled) gradient; s from the exact sum (in FinishBucket).
    Stream& stream = DefaultStream(grads.device());
    bucket.h = CopyOn(grads, stream);
    const float scale = RankScale(comm);
    if (scale != 1.0f) ops::Scale(scale, &bucket.h, stream);
  }
  // Top-K keeps s for the whole bucket, so its anchor needs the full sum even under ZeRO-1.
  const bool topk = options_.ef21.compressor.kind == CompressorKind::kTopK;
  if (options_.zero1 && !(mode == Mode::kAnchor && topk)) {
    bucket.shard_begin = bucket.begin + comm->rank() * chunk;
    bucket.shard = Tensor::Empty({chunk}, DType::kF32, grads.device());
    MF_ASSIGN_OR_RETURN(bucket.work, comm->ReduceScatter(grads, &bucket.shard, {}));
    bytes_sent_ += (n - 1) * chunk * 4;
  } else {
    MF_ASSIGN_OR_RETURN(bucket.work, comm->AllReduce(&grads, {}));
    bytes_sent_ += 2 * (n - 1) * chunk * 4;
  }
  return absl::OkStatus();
}

absl::Status GradSync::LaunchCompressed(GradBucket& bucket, Communicator* comm) {
  const Compressor& c = options_.ef21.compressor;
  const int64_t n = comm->size(), size = bucket.end - bucket.begin;
  MF_CHECK_EQ(bucket.h.numel(), size) << "EF21 state does not match its bucket";
  const Tensor grads = params_->flat_buffers()[bucket.buffer].grads.Slice(bucket.begin, bucket.end);
  const Device device = grads.device();
  // Top-K: one message for the whole bucket, all-gathered. Quantizers: one message per destination
  // chunk, sent as an all-to-all (a compressed reduce-scatter).
  const bool topk = c.kind == CompressorKind::kTopK;
  const int64_t parts = topk ? 1 : n, bytes = c.MessageBytes(size / parts);
  bucket.send = Tensor::Empty({parts, bytes}, DType::kU8, device);
  bucket.recv = Tensor::Empty({n, bytes}, DType::kU8, device);
  // δ = v·scale − h is encoded, and h advances by what the receivers will decode.
  ops::Ef21Encode(grads, RankScale(comm), c, &bucket.h, &bucket.send, DefaultStream(device));
  if (topk) {
    MF_ASSIGN_OR_RETURN(bucket.work, comm->AllGather(bucket.send, &bucket.recv, {}));
  } else {
    const std::vector<int64_t> rows(n, 1);
    MF_ASSIGN_OR_RETURN(bucket.work, comm->AllToAllV(bucket.send, rows, &bucket.recv, rows, {}));
  }
  bytes_sent_ += (n - 1) * bytes;
  return absl::OkStatus();
}

absl::Status GradSync::FinishBucket(GradBucket& bucket) {
  Communicator* comm = group_of(bucket.buffer);
  const Mode mode = static_cast<Mode>(bucket.mode);
  if (IsSingleRank(comm) || mode == Mode::kPlain) {
    if (!options_.zero1) {
      bucket.shard = params_->flat_buffers()[bucket.buffer].grads.Slice(bucket.begin, bucket.end);
      bucket.shard_begin = bucket.begin;
    }
    return absl::OkStatus();
  }
  const Compressor& c = options_.ef21.compressor;
  const bool topk = c.kind == CompressorKind::kTopK;
  const int64_t n = comm->size(), size = bucket.end - bucket.begin, chunk = size / n;
  const int64_t mine = bucket.begin + comm->rank() * chunk;
  Tensor grads = params_->flat_buffers()[bucket.buffer].grads.Slice(bucket.begin, bucket.end);
  const Tensor my_chunk = grads.Slice(mine - bucket.begin, mine - bucket.begin + chunk);
  Stream& stream = DefaultStream(grads.device());
  if (mode == Mode::kAnchor) {
    // The exact sum: in grads after the all-reduce, in the shard after the ZeRO-1 reduce-scatter.
    bucket.s = CopyOn(topk ? grads : (options_.zero1 ? bucket.shard : my_chunk), stream);
  } else {
    // Owner side: every member's piece decoded and added in member order (deterministic), then s.
    ops::Ef21DecodeSum(bucket.recv, c, owner_weights_, &bucket.s, stream);
    // The reduced gradient this step is the running estimate s. Without ZeRO-1 the chunks are
    // all-gathered into grads; Finish() waits for that after every bucket has launched its gather.
    if (topk) {
      grads.CopyFromAsync(bucket.s, stream);
    } else if (!options_.zero1) {
      MF_ASSIGN_OR_RETURN(bucket.work, comm->AllGather(bucket.s, &grads, {}));
      bytes_sent_ += (n - 1) * chunk * 4;
    }
  }
  bucket.send = bucket.recv = Tensor();
  if (!options_.zero1) {
    bucket.shard = grads;
    bucket.shard_begin = bucket.begin;
  } else if (topk) {
    bucket.shard = my_chunk;  // grads hold the full sum (a copy of s, which stays untouched)
    bucket.shard_begin = mine;
  } else if (mode == Mode::kCompressed) {
    // A copy: the trainer scales its owned gradient in place and s must stay the estimate.
    bucket.shard = CopyOn(bucket.s, stream);
    bucket.shard_begin = mine;
  }  // else an anchor's shard is the reduce-scatter output already
  return absl::OkStatus();
}

int GradSync::Progress() {
  int in_flight = 0;
  for (GradBucket& bucket : buckets_) {
    if (bucket.work && !bucket.work->IsCompleted()) ++in_flight;
  }
  return in_flight;
}

absl::Status GradSync::MarkReady(int64_t first, int64_t last) {
  Progress();
  for (int64_t p = first; p < last; ++p) {
    if (ready_[p]) continue;
    ready_[p] = true;
    for (int b : buckets_of_param_[p]) {
      if (--buckets_[b].pending == 0) MF_RETURN_IF_ERROR(Launch(buckets_[b]));
    }
  }
  return absl::OkStatus();
}

absl::Status GradSync::Finish() {
  // Reverse order: the buckets of the last parameters completed first in backward.
  for (auto it = buckets_.rbegin(); it != buckets_.rend(); ++it) {
    MF_RETURN_IF_ERROR(Launch(*it));
  }
  auto where = [](const GradBucket& bucket) {
    return absl::StrCat("gradient bucket [", bucket.begin, ", ", bucket.end, ") of buffer ",
                        bucket.buffer);
  };
  for (GradBucket& bucket : buckets_) {
    if (bucket.work) MF_RETURN_IF_ERROR(Annotate(bucket.work->Wait(), where(bucket)));
    bucket.work.reset();
    MF_RETURN_IF_ERROR(Annotate(FinishBucket(bucket), where(bucket)));
  }
  // EF21 without ZeRO-1: the all-gathers of the owners' estimates s launched by FinishBucket.
  for (GradBucket& bucket : buckets_) {
    if (bucket.work) MF_RETURN_IF_ERROR(Annotate(bucket.work->Wait(), where(bucket)));
  }
  return absl::OkStatus();
}

std::vector<Tensor*> GradSync::OwnedGrads() {
  std::vector<Tensor*> owned;
  for (GradBucket& bucket : buckets_) owned.push_back(&bucket.shard);
  return owned;
}

absl::StatusOr<double> GradSync::GlobalSumOfSquares() {
  std::vector<FlatBuffer>& buffers = params_->flat_buffers();
  const int64_t n = static_cast<int64_t>(buffers.size());
  if (n == 0) return SumInRankOrder(groups_.pp, 0.0);
  // One partial per buffer (f64 bits in i64), accumulated on the gradients' device in the order of
  // the compute stream that wrote them, bucket by bucket.
  const Device device = buffers[0].grads.device();
  Stream& stream = DefaultStream(device);
  Tensor partials = Tensor::Empty({n}, DType::kI64, device);
  partials.SetZero(stream);
  for (GradBucket& bucket : buckets_) {
    // The tied embedding's last-stage copy equals the first stage's, which counts.
    if (buffers[bucket.buffer].reduction == GradReduction::kTiedCopy) continue;
    Tensor slot = partials.Slice(bucket.buffer, bucket.buffer + 1);
    ops::SumOfSquaresInto(bucket.shard, &slot, stream);
  }
  const Tensor host = partials.To(Device::Cpu());
  double total = 0;
  for (int64_t b = 0; b < n; ++b) {
    const GradReduction reduction = buffers[b].reduction;
    if (reduction == GradReduction::kTiedCopy) continue;
    double local;
    std::memcpy(&local, static_cast<const char*>(host.raw_data()) + b * sizeof(double),
                sizeof(double));
    // Under ZeRO-1 each member of the reducing group owns other elements.
    if (options_.zero1) {
      MF_ASSIGN_OR_RETURN(local, SumInRankOrder(group_of(static_cast<int>(b)), local));
    }
    Communicator* differs = reduction == GradReduction::kDenseDataCp ? groups_.tp
                            : reduction == GradReduction::kExpertData ? groups_.etp_ep
                                                                      : nullptr;
    MF_ASSIGN_OR_RETURN(local, SumInRankOrder(differs, local));
    total += local;
  }
  return SumInRankOrder(groups_.pp, total);
}

}  // namespace moefold::parallel
