// Data-parallel gradient synchronisation over contiguous buffers (DESIGN §5): every parameter's grad
// lives in one flat buffer per DataGroup (dense → DP×CP group, expert → EDP group), cut into buckets
// whose sizes divide by the group size. A bucket is reduced — all-reduce, or reduce-scatter under
// ZeRO-1 — as soon as the last of its parameters is marked ready during backward, so communication
// overlaps the rest of the backward; Finish() launches what is left and waits.
//
//   params.Flatten(GradSync::Alignment(dense, expert));
//   GradSync sync(&params, dense, expert, {.zero1 = true});
//   sync.BeginStep(); ... sync.MarkReady(first, last); ... MF_RETURN_IF_ERROR(sync.Finish());
#pragma once

#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "core/parameter.h"
#include "parallel/communicator.h"

namespace moefold::parallel {

struct GradSyncOptions {
  bool zero1 = false;                    // reduce-scatter into per-rank shards instead of all-reduce
  int64_t bucket_elements = 1 << 22;     // target bucket size (rounded to the group size)
};

struct GradBucket {
  int buffer = 0;        // index into ParameterSet::flat_buffers()
  int64_t begin = 0;     // element range of the flat buffer
  int64_t end = 0;
  int pending = 0;       // parameters of this bucket not yet marked ready this step
  std::unique_ptr<Work> work;
  Tensor shard;          // ZeRO-1: this rank's reduced chunk ((end − begin) / group size)
  int64_t shard_begin = 0;  // ZeRO-1: flat-buffer offset of this rank's chunk
};

class GradSync {
 public:
  // Alignment to pass to ParameterSet::Flatten so every buffer splits into equal shards.
  static int64_t Alignment(const Communicator* dense, const Communicator* expert);

  // dense/expert may be null (a group of one rank: nothing to reduce). `params` must be flattened.
  GradSync(ParameterSet* params, Communicator* dense, Communicator* expert,
           const GradSyncOptions& options);

  void BeginStep();
  // Parameters with indices [first, last) of the set have their final gradient for this step;
  // launches every bucket that became complete.
  absl::Status MarkReady(int64_t first, int64_t last);
  // Launches the remaining buckets and waits for all of them.
  absl::Status Finish();

  // The gradient elements this rank owns after Finish(): whole buffers without ZeRO-1, its shard of
  // every bucket with it. Used for scaling by 1/Z, the norm and the optimizer.
  std::vector<Tensor*> OwnedGrads();
  // Σ g² over the whole (global) gradient, each element counted once.
  absl::StatusOr<double> GlobalSumOfSquares();

  bool zero1() const { return options_.zero1; }
  std::vector<GradBucket>& buckets() { return buckets_; }
  ParameterSet* params() { return params_; }
  Communicator* group_of(int buffer);  // the group reducing flat buffer `buffer` (may be null)
  // Bytes this rank sent in the last step's reductions, and what an uncompressed all-reduce sends.
  int64_t bytes_sent() const { return bytes_sent_; }

 private:
  absl::Status Launch(GradBucket& bucket);

  ParameterSet* params_;
  Communicator* dense_;
  Communicator* expert_;
  GradSyncOptions options_;
  std::vector<GradBucket> buckets_;
  std::vector<std::vector<int>> buckets_of_param_;  // parameter index → buckets it touches
  std::vector<bool> ready_;
  int64_t bytes_sent_ = 0;
};

}  // namespace moefold::parallel
