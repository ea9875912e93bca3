// ZeRO-1 AdamW: fp32 master weights and moments sharded over the data-parallel group. Each rank
// updates only its chunk of every gradient bucket (the reduce-scattered shard GradSync produced),
// then the updated parameter chunks are all-gathered so every rank holds the full model again.
// Weight decay follows each element's parameter (norms excluded), as the unsharded AdamW.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "core/stream.h"
#include "optim/adamw.h"
#include "parallel/grad_sync.h"

namespace moefold::optim {

class ShardedAdamW {
 public:
  // `sync` must use zero1 and outlive the optimizer.
  ShardedAdamW(parallel::GradSync* sync, const AdamWOptions& options);

  // After GradSync::Finish() and any scaling of the owned grads: one AdamW step on the owned
  // elements, then the all-gather of parameters.
  absl::Status Step(float lr, Stream& stream = CpuStream());

  int64_t step_count() const { return step_count_; }
  int64_t state_bytes() const;  // m and v held by this rank

 private:
  parallel::GradSync* sync_;
  AdamWOptions options_;
  std::vector<Tensor> m_;  // per bucket, shaped like its shard
  std::vector<Tensor> v_;
  int64_t step_count_ = 0;
};

}  // namespace moefold::optim
