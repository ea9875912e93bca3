// ZeRO-1 update: AdamW over shard ∩ parameter runs (or one fused pass per shard), then all-gather
// per bucket.
#include "optim/zero1_adamw.h"

#include <algorithm>

#include "ops/adamw.h"

namespace moefold::optim {

ShardedAdamW::ShardedAdamW(parallel::GradSync* sync, const AdamWOptions& options)
    : sync_(sync), options_(options) {
  MF_CHECK(sync->zero1()) << "ShardedAdamW needs a GradSync with zero1";
  for (parallel::GradBucket& bucket : sync->buckets()) {
    parallel::Communicator* comm = sync->group_of(bucket.buffer);
    const int64_t n = comm == nullptr ? 1 : comm->size();
    const int64_t chunk = (bucket.end - bucket.begin) / n;
    const Device device = sync->params()->flat_buffers()[bucket.buffer].values.device();
    m_.push_back(Tensor::Zeros({chunk}, DType::kF32, device));
    v_.push_back(Tensor::Zeros({chunk}, DType::kF32, device));
    // GradSync sets shard_begin when it reduces; this rank's chunk is always the rank-th.
    const int64_t shard_begin = bucket.begin + (comm == nullptr ? 0 : comm->rank()) * chunk;
    const FlatBuffer& buffer = sync->params()->flat_buffers()[bucket.buffer];
    shard_begins_.push_back(shard_begin);
    no_decay_.push_back(NoDecayRanges(buffer, shard_begin, shard_begin + chunk).To(device));
  }
}

int64_t ShardedAdamW::state_bytes() const {
  int64_t bytes = 0;
  for (size_t i = 0; i < m_.size(); ++i) bytes += m_[i].nbytes() + v_[i].nbytes();
  return bytes;
}

absl::Status ShardedAdamW::Gather(size_t i, std::vector<std::unique_ptr<parallel::Work>>* gathers,
                                  std::vector<Tensor>* inputs) {
  parallel::GradBucket& bucket = sync_->buckets()[i];
  parallel::Communicator* comm = sync_->group_of(bucket.buffer);
  if (comm == nullptr || comm->size() <= 1) return absl::OkStatus();
  FlatBuffer& buffer = sync_->params()->flat_buffers()[bucket.buffer];
  const int64_t lo = bucket.shard_begin, hi = bucket.shard_begin + bucket.shard.numel();
  // Input and output must not overlap: gather from a copy of this rank's updated chunk.
  inputs->push_back(buffer.values.Slice(lo, hi).Clone());
  Tensor all = buffer.values.Slice(bucket.begin, bucket.end);
  MF_ASSIGN_OR_RETURN(auto work, comm->AllGather(inputs->back(), &all, {}));
  gathers->push_back(std::move(work));
  return absl::OkStatus();
}

absl::Status ShardedAdamW::Step(float lr, Stream& stream) {
  ++step_count_;
  auto& buffers = sync_->params()->flat_buffers();
  auto& buckets = sync_->buckets();
  std::vector<std::unique_ptr<parallel::Work>> gathers;
  std::vector<Tensor> gather_inputs;  // kept alive until every gather completed
  for (size_t i = 0; i < buckets.size(); ++i) {
    parallel::GradBucket& bucket = buckets[i];
    FlatBuffer& buffer = buffers[bucket.buffer];
    const int64_t lo = bucket.shard_begin, hi = bucket.shard_begin + bucket.shard.numel();
    for (const FlatSegment& seg : buffer.segments) {
      const int64_t a = std::max(lo, seg.offset), b = std::min(hi, seg.offset + seg.numel);
      if (a >= b) continue;
      ops::AdamWOptions o = StepOptions(options_, lr, step_count_);
      o.weight_decay = seg.param->weight_decay ? options_.weight_decay : 0.0f;
      Tensor param = buffer.values.Slice(a, b);
      Tensor m = m_[i].Slice(a - lo, b - lo), v = v_[i].Slice(a - lo, b - lo);
      ops::AdamWStep(o, bucket.shard.Slice(a - lo, b - lo), &param, &m, &v, stream);
    }
    MF_RETURN_IF_ERROR(Gather(i, &gathers, &gather_inputs));
  }
  for (auto& work : gathers) MF_RETURN_IF_ERROR(work->Wait());
  return absl::OkStatus();
}

absl::Status ShardedAdamW::Step(float lr, const Tensor& grad_scale, Stream& stream) {
  ++step_count_;
  const ops::AdamWOptions o = StepOptions(options_, lr, step_count_);
  auto& buffers = sync_->params()->flat_buffers();
  auto& buckets = sync_->buckets();
  std::vector<std::unique_ptr<parallel::Work>> gathers;
  std::vector<Tensor> gather_inputs;  // kept alive until every gather completed
  for (size_t i = 0; i < buckets.size(); ++i) {
    parallel::GradBucket& bucket = buckets[i];
    FlatBuffer& buffer = buffers[bucket.buffer];
    const int64_t lo = bucket.shard_begin, hi = bucket.shard_begin + bucket.shard.numel();
    MF_CHECK(lo == shard_begins_[i] && bucket.shard.numel() == m_[i].numel())
        << "ShardedAdamW: bucket " << i << "'s shard [" << lo << ", " << hi
        << ") is not the chunk its state was built for";
    Tensor param = buffer.values.Slice(lo, hi);
    ops::AdamWFlatStep(o, bucket.shard, grad_scale, no_decay_[i], &param, &m_[i], &v_[i],
                       /*compute=*/nullptr, stream);
    MF_RETURN_IF_ERROR(Gather(i, &gathers, &gather_inputs));
  }
  for (auto& work : gathers) MF_RETURN_IF_ERROR(work->Wait());
  return absl::OkStatus();
}

}  // namespace moefold::optim
