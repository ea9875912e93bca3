// Device-side helpers of a step: the micro-batch's device copies and zeroed tensors on the stream.
#include "core/model/step_context.h"

namespace moefold::model {

MicroBatch WithDeviceCopies(const MicroBatch& batch, const Stream& stream) {
  MicroBatch out = batch;
  MicroBatch::DeviceCopies& d = out.on_device;
  const Device& device = stream.device();
  if (d.tokens.defined() && d.tokens.numel() > 0 && d.tokens.device() == device) return out;
  const int64_t b = batch.batch(), s = batch.seq_len();
  Tensor rows = Tensor::Empty({b * s}, DType::kI32);
  const int32_t* positions = batch.positions.data<int32_t>();
  for (int64_t i = 0; i < b * s; ++i) rows.data<int32_t>()[i] = positions[i % s];
  d.tokens = batch.tokens.To(device, stream);
  d.targets = batch.targets.To(device, stream);
  d.row_positions = rows.To(device, stream);
  return out;
}

Tensor StepContext::Zeros(const Shape& shape, DType dtype) const {
  Tensor t = Tensor::Empty(shape, dtype, device());
  t.SetZero(s());
  return t;
}

Tensor StepContext::DeviceSumSlot(DeviceSum which) const {
  MF_CHECK(device_sums.defined() && device_sums.numel() == kNumDeviceSums)
      << "StepContext::device_sums is not set (ResetDeviceSums)";
  return device_sums.Slice(which, which + 1);
}

}  // namespace moefold::model
