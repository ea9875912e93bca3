// CPU reference of PermuteQuantize: literally PermuteTokens into a temporary, then the recipe's
// quantisation op on it — the definition the fused CUDA kernel must reproduce bit for bit.
#include "ops/permute_quantize.h"

#include "absl/strings/str_cat.h"
#include "ops/cpu/check.h"
#include "ops/fp8.h"
#include "ops/moe.h"

namespace moefold::ops {

absl::Status PermuteQuantize(const Tensor& x, const Tensor& sorted, int k, const Tensor& scale,
                             const Tensor& scale_inv, const PermuteQuantizeOptions& options,
                             Tensor* codes, Tensor* row_scale_inv, Tensor* amax, Stream& stream) {
  constexpr const char* kOp = "PermuteQuantize";
  MF_CHECK(codes != nullptr) << kOp << ": output codes is null";
  MF_CHECK(x.rank() == 2) << kOp << ": x " << x.DebugString() << " is not (T, H)";
  const int64_t n = sorted.numel(), h = x.dim(1);
  if (options.tiles && h % kFp8ActivationTile.cols != 0) {
    return absl::InvalidArgumentError(absl::StrCat(kOp, ": H = ", h, " is not a multiple of the ",
                                                   kFp8ActivationTile.cols, "-wide tiles"));
  }
  MF_CHECK(!options.tiles || (row_scale_inv != nullptr && amax == nullptr))
      << kOp << ": tiles need row_scale_inv and record no amax";
  MF_RETURN_IF_GPU(x, kOp,
                   cuda::PermuteQuantize(x, sorted, k, scale, scale_inv, options, codes,
                                         row_scale_inv, amax, stream));
  Tensor permuted = Tensor::Empty({n, h}, x.dtype());
  PermuteTokens(x, sorted, k, &permuted, stream);
  if (options.tiles) {
    return QuantizeBlockwise(permuted, kFp8ActivationTile, {.pow2 = options.pow2}, codes,
                             row_scale_inv, stream);
  }
  CastTransposeAmax(permuted, scale, codes, nullptr, amax, stream);
  if (row_scale_inv != nullptr) {
    internal::CheckF32(scale_inv, kOp, "scale_inv");
    internal::CheckShape(scale_inv, {1}, kOp, "scale_inv");
    internal::CheckF32(*row_scale_inv, kOp, "row_scale_inv");
    internal::CheckShape(*row_scale_inv, {n, 1}, kOp, "row_scale_inv");
    const float s = scale_inv.data<float>()[0];
    for (int64_t r = 0; r < n; ++r) row_scale_inv->data<float>()[r] = s;
  }
  return absl::OkStatus();
}

}  // namespace moefold::ops
