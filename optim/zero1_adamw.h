// ZeRO-1 AdamW: fp32 master weights and moments sharded over the data-parallel group. Each rank
// updates only its chunk of every gradient bucket (the reduce-scattered shard GradSync produced),
// then the updated parameter chunks are all-gathered so every rank holds the full model again.
// Weight decay follows each element's parameter (norms excluded), as the unsharded AdamW.
#pragma once

#include <memory>
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
  // The same with every owned gradient multiplied by grad_scale[0] first ((1) f32 on the
  // parameters' device: 1/Z × the clip factor, made on the host from ClipScale), as one
  // ops::AdamWFlatStep per bucket shard (padding between segments included: it holds zeros and
  // stays zero). The compute copy is not written: refresh it after the all-gather.
  absl::Status Step(float lr, const Tensor& grad_scale, Stream& stream);

  int64_t step_count() const { return step_count_; }
  int64_t state_bytes() const;  // m and v held by this rank

  // Checkpoint state: the moments of bucket i's owned chunk (f32, shaped like it), which starts at
  // flat-buffer offset shard_begin(i) of the bucket's buffer. Restoring = CopyFrom into m(i), v(i)
  // and set_step_count.
  Tensor& m(size_t i) { return m_[i]; }
  Tensor& v(size_t i) { return v_[i]; }
  int64_t shard_begin(size_t i) const { return shard_begins_[i]; }
  size_t num_buckets() const { return m_.size(); }
  void set_step_count(int64_t step_count) { step_count_ = step_count; }

 private:
  parallel::GradSync* sync_;
  AdamWOptions options_;
  // Launches the all-gather of bucket i's updated shard (input copies kept in `inputs`).
  absl::Status Gather(size_t i, std::vector<std::unique_ptr<parallel::Work>>* gathers,
                      std::vector<Tensor>* inputs);

  std::vector<Tensor> m_;  // per bucket, shaped like its shard
  std::vector<Tensor> v_;
  std::vector<int64_t> shard_begins_;  // per bucket: flat-buffer offset of this rank's chunk
  std::vector<Tensor> no_decay_;       // per bucket: (R, 2) i64 ranges of its chunk, on its device
  int64_t step_count_ = 0;
};

}  // namespace moefold::optim
