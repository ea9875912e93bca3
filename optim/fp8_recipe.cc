// FP8 recipe state: delayed scaling as a group's four tensors and one reduce-then-update step;
// current scaling as amax, scale and cast in three ops. All the arithmetic is in ops/fp8.h, so the
// CPU emulation and the GPU give the same scales.
#include "optim/fp8_recipe.h"

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "ops/fp8.h"

namespace moefold::optim {
namespace {

bool IsFp8(DType dtype) { return dtype == DType::kFp8E4M3 || dtype == DType::kFp8E5M2; }

// amax = max over the members of comm. The collectives order themselves after the device's default
// stream only: work enqueued on another stream is waited for here first.
absl::Status MaxOverRanks(parallel::Communicator* comm, Tensor* amax, Stream& stream) {
  if (parallel::IsSingleRank(comm)) return absl::OkStatus();
  if (amax->device().is_cuda() && &stream != &DefaultStream(amax->device())) stream.Synchronize();
  return parallel::WaitFor(comm->AllReduce(amax, {.op = parallel::ReduceOp::kMax}));
}

}  // namespace

Fp8DelayedScaling::Fp8DelayedScaling(const Fp8DelayedScalingOptions& options, int64_t num_tensors,
                                     const Device& device)
    : options_(options),
      amaxes_(Tensor::Zeros({num_tensors}, DType::kF32, device)),
      history_(Tensor::Zeros({options.amax_history, num_tensors}, DType::kF32, device)),
      scales_(Tensor::Empty({num_tensors}, DType::kF32, device)),
      scale_invs_(Tensor::Empty({num_tensors}, DType::kF32, device)) {
  scales_.Fill(1.0f);
  scale_invs_.Fill(1.0f);
}

absl::StatusOr<Fp8DelayedScaling> Fp8DelayedScaling::Create(int64_t num_tensors,
                                                            const Fp8DelayedScalingOptions& options,
                                                            const Device& device) {
  if (options.amax_history < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Fp8DelayedScaling: amax_history must be at least 1, got ", options.amax_history));
  }
  if (num_tensors < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Fp8DelayedScaling: num_tensors must be >= 0, got ", num_tensors));
  }
  if (!IsFp8(options.format)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Fp8DelayedScaling: format must be fp8_e4m3 or fp8_e5m2, got ", DTypeName(options.format)));
  }
  return Fp8DelayedScaling(options, num_tensors, device);
}

float Fp8DelayedScaling::fp8_max() const { return ops::Fp8Max(options_.format); }

absl::Status Fp8DelayedScaling::Update(parallel::Communicator* comm, Stream& stream) {
  MF_RETURN_IF_ERROR(MaxOverRanks(comm, &amaxes_, stream));
  ops::Fp8UpdateScales(fp8_max(), &amaxes_, &history_, &scales_, &scale_invs_, stream);
  return absl::OkStatus();
}

absl::Status CastCurrentScaling(const Tensor& x, parallel::Communicator* comm, Tensor* y,
                                Tensor* y_t, Tensor* scale, Tensor* scale_inv, Stream& stream) {
  MF_CHECK(y != nullptr || y_t != nullptr) << "CastCurrentScaling: neither y nor y_t given";
  MF_CHECK(scale != nullptr && scale_inv != nullptr) << "CastCurrentScaling: scale is null";
  const DType format = y != nullptr ? y->dtype() : y_t->dtype();
  Tensor amax = Tensor::Zeros({1}, DType::kF32, x.device());
  amax.RecordStream(stream);  // a temporary of work on `stream`: freed only after it
  ops::CastTransposeAmax(x, *scale, nullptr, nullptr, &amax, stream);
  MF_RETURN_IF_ERROR(MaxOverRanks(comm, &amax, stream));
  ops::Fp8UpdateScales(ops::Fp8Max(format), &amax, nullptr, scale, scale_inv, stream);
  ops::CastTransposeAmax(x, *scale, y, y_t, nullptr, stream);
  return absl::OkStatus();
}

}  // namespace moefold::optim
