// The micro-batches one rank feeds its model for one global batch, for training and evaluation
// alike: this DP rank's contiguous slice of the batch's samples (the same samples for any layout)
// and, under context parallelism, this CP rank's chunks of every sequence at their global positions.
//
//   const Tensor positions = LocalPositions(seq, cp, cp_rank);
//   std::vector<model::MicroBatch> batches =
//       LocalMicroBatches(samples, step, {seq, global_batch, micro, dp, dp_rank}, positions, stream);
#pragma once

#include <cstdint>
#include <vector>

#include "core/data/training_data.h"
#include "core/model/step_context.h"
#include "core/stream.h"
#include "core/tensor.h"

namespace moefold::train {

// The token positions this CP rank holds of a sequence of `seq` tokens: 0..seq−1 without CP, its
// two load-balancing chunks (parallel::ContextParallelPositions) with it. (local_seq) i32, host.
Tensor LocalPositions(int64_t seq, int cp, int cp_rank);

struct BatchSlice {
  int64_t seq_len = 0;       // tokens per sequence (a sample holds seq_len + 1)
  int64_t global_batch = 0;  // sequences per global batch
  int64_t micro = 0;         // sequences per micro-batch
  int dp_size = 1;
  int dp_rank = 0;
};

// Global batch `batch_index`'s micro-batches of this DP rank (global_batch / dp_size / micro of
// them), tokens and next-token targets at `positions`, uploaded once to the stream's device.
std::vector<model::MicroBatch> LocalMicroBatches(const data::SampleSource& samples,
                                                 int64_t batch_index, const BatchSlice& slice,
                                                 const Tensor& positions, const Stream& stream);

}  // namespace moefold::train
