#include "core/train/micro_batches.h"

#include "core/data/gpt_dataset.h"
#include "parallel/ring_attention.h"

namespace moefold::train {

Tensor LocalPositions(int64_t seq, int cp, int cp_rank) {
  if (cp > 1) return parallel::ContextParallelPositions(seq, cp, cp_rank);
  Tensor positions = Tensor::Empty({seq}, DType::kI32);
  for (int64_t s = 0; s < seq; ++s) positions.data<int32_t>()[s] = static_cast<int32_t>(s);
  return positions;
}

std::vector<model::MicroBatch> LocalMicroBatches(const data::SampleSource& samples,
                                                 int64_t batch_index, const BatchSlice& slice,
                                                 const Tensor& positions, const Stream& stream) {
  const int64_t local_batch = slice.global_batch / slice.dp_size;
  const int64_t num_micro = local_batch / slice.micro, local_seq = positions.numel();
  const std::vector<int64_t> ids =
      data::GlobalBatchSampleIds(batch_index, slice.global_batch, samples.size());
  std::vector<int32_t> sample_tokens(slice.seq_len + 1);
  std::vector<model::MicroBatch> batches(num_micro);
  for (int64_t m = 0; m < num_micro; ++m) {
    model::MicroBatch& batch = batches[m];
    batch.tokens = Tensor::Empty({slice.micro, local_seq}, DType::kI32);
    batch.targets = Tensor::Empty({slice.micro, local_seq}, DType::kI32);
    batch.positions = positions;
    for (int64_t i = 0; i < slice.micro; ++i) {
      samples.GetSample(ids[slice.dp_rank * local_batch + m * slice.micro + i],
                        sample_tokens.data());
      int32_t* tokens = batch.tokens.data<int32_t>() + i * local_seq;
      int32_t* targets = batch.targets.data<int32_t>() + i * local_seq;
      for (int64_t j = 0; j < local_seq; ++j) {
        const int32_t pos = positions.data<int32_t>()[j];
        tokens[j] = sample_tokens[pos];
        targets[j] = sample_tokens[pos + 1];
      }
    }
    batch = model::WithDeviceCopies(batch, stream);  // uploaded once, read by every layer
  }
  return batches;
}

}  // namespace moefold::train
