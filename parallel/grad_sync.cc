// Bucketed gradient reduction with optional ZeRO-1 sharding.
#include "parallel/grad_sync.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "ops/reduce.h"

namespace moefold::parallel {
namespace {

int GroupSize(const Communicator* comm) { return comm == nullptr ? 1 : comm->size(); }

}  // namespace

int64_t GradSync::Alignment(const Communicator* dense, const Communicator* expert) {
  return std::lcm<int64_t>(GroupSize(dense), GroupSize(expert));
}

GradSync::GradSync(ParameterSet* params, Communicator* dense, Communicator* expert,
                   const GradSyncOptions& options)
    : params_(params), dense_(dense), expert_(expert), options_(options) {
  auto& buffers = params->flat_buffers();
  MF_CHECK(!buffers.empty()) << "GradSync needs ParameterSet::Flatten() first";
  std::vector<int64_t> index_of;  // Parameter* order → index
  const auto& all = params->params();
  buckets_of_param_.resize(all.size());
  for (int b = 0; b < static_cast<int>(buffers.size()); ++b) {
    const FlatBuffer& buffer = buffers[b];
    const int64_t n = GroupSize(group_of(b));
    const int64_t size = buffer.grads.numel();
    MF_CHECK_EQ(size % n, 0) << "flat buffer not aligned to its group size";
    const int64_t target = std::max<int64_t>(n, options.bucket_elements / n * n);
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
}

Communicator* GradSync::group_of(int buffer) {
  return params_->flat_buffers()[buffer].group == DataGroup::kDense ? dense_ : expert_;
}

void GradSync::BeginStep() {
  for (GradBucket& bucket : buckets_) {
    bucket.pending = 0;
    bucket.work.reset();
  }
  for (const auto& list : buckets_of_param_) {
    for (int b : list) ++buckets_[b].pending;
  }
  ready_.assign(ready_.size(), false);
  bytes_sent_ = 0;
}

absl::Status GradSync::Launch(GradBucket& bucket) {
  if (bucket.work) return absl::OkStatus();
  Communicator* comm = group_of(bucket.buffer);
  Tensor grads = params_->flat_buffers()[bucket.buffer].grads.Slice(bucket.begin, bucket.end);
  const int64_t n = GroupSize(comm);
  if (comm == nullptr || n == 1) {
    bucket.shard = grads;
    bucket.shard_begin = bucket.begin;
    bucket.pending = -1;  // done, nothing to wait for
    return absl::OkStatus();
  }
  if (options_.zero1) {
    const int64_t chunk = (bucket.end - bucket.begin) / n;
    bucket.shard_begin = bucket.begin + comm->rank() * chunk;
    bucket.shard = Tensor::Empty({chunk}, DType::kF32);
    MF_ASSIGN_OR_RETURN(bucket.work, comm->ReduceScatter(grads, &bucket.shard, {}));
    bytes_sent_ += (n - 1) * chunk * 4;
  } else {
    MF_ASSIGN_OR_RETURN(bucket.work, comm->AllReduce(&grads, {}));
    // A ring all-reduce sends 2·(n−1)/n of the buffer.
    bytes_sent_ += 2 * (n - 1) * (bucket.end - bucket.begin) / n * 4;
  }
  return absl::OkStatus();
}

absl::Status GradSync::MarkReady(int64_t first, int64_t last) {
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
  for (GradBucket& bucket : buckets_) {
    if (bucket.work) {
      MF_RETURN_IF_ERROR(Annotate(bucket.work->Wait(),
                                  absl::StrCat("gradient bucket [", bucket.begin, ", ", bucket.end,
                                               ") of buffer ", bucket.buffer)));
    }
  }
  if (!options_.zero1) {
    for (GradBucket& bucket : buckets_) {
      bucket.shard = params_->flat_buffers()[bucket.buffer].grads.Slice(bucket.begin, bucket.end);
      bucket.shard_begin = bucket.begin;
    }
  }
  return absl::OkStatus();
}

std::vector<Tensor*> GradSync::OwnedGrads() {
  std::vector<Tensor*> owned;
  for (GradBucket& bucket : buckets_) owned.push_back(&bucket.shard);
  return owned;
}

absl::StatusOr<double> GradSync::GlobalSumOfSquares() {
  // Per buffer: the local part (shard or whole), then summed over the buffer's group when sharded.
  double total = 0;
  for (int b = 0; b < static_cast<int>(params_->flat_buffers().size()); ++b) {
    double local = 0;
    for (GradBucket& bucket : buckets_) {
      if (bucket.buffer == b) local += ops::SumOfSquares(bucket.shard, CpuStream());
    }
    Communicator* comm = group_of(b);
    if (options_.zero1 && comm != nullptr && comm->size() > 1) {
      // Gather every rank's partial sum and add them in rank order: identical on every rank.
      Tensor mine = Tensor::FromVector({static_cast<float>(local)}, {1});
      Tensor all = Tensor::Empty({comm->size()}, DType::kF32);
      MF_RETURN_IF_ERROR(WaitFor(comm->AllGather(mine, &all, {})));
      local = 0;
      for (float v : all.ToVector()) local += v;
    }
    total += local;
  }
  return total;
}

}  // namespace moefold::parallel
