// Compressor names.
#include "parallel/compressors.h"

#include "absl/strings/str_cat.h"

namespace moefold::parallel {

absl::StatusOr<CompressorKind> ParseCompressor(absl::string_view name) {
  if (name == "identity") return CompressorKind::kIdentity;
  if (name == "int8") return CompressorKind::kInt8;
  if (name == "fp8") return CompressorKind::kFp8;
  if (name == "topk") return CompressorKind::kTopK;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown compressor '", name, "' (identity, int8, fp8, topk)"));
}

}  // namespace moefold::parallel
