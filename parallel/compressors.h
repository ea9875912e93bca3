// The gradient compressors of error feedback by name. The compressors themselves — their message
// format and the sender's and owner's steps on any device — are ops (ops/quant.h); GradSync runs
// them on the gradients' device.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ops/quant.h"

namespace moefold::parallel {

using CompressorKind = ops::CompressorKind;
using Compressor = ops::CompressorSpec;

// "identity", "int8", "fp8", "topk"; InvalidArgument naming anything else.
absl::StatusOr<CompressorKind> ParseCompressor(absl::string_view name);

}  // namespace moefold::parallel
