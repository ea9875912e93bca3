// FP8 all-gathers under sequence parallelism: quantise this rank's rows, gather the codes.
#include "core/model/fp8_gather.h"

#include "core/model/fp8_linear.h"
#include "ops/fp8_gemm.h"
#include "parallel/tensor_parallel.h"

namespace moefold::model {
namespace {

constexpr int64_t kTokenBlock = 128;  // the weight gradient's K (tokens) is padded to this

}  // namespace

bool GathersFp8(const StepContext& ctx, const ModelParallel& mp, const Parameter& param) {
  return mp.sequence_parallel && !parallel::IsSingleRank(mp.tp) && ctx.fp8 != nullptr &&
         ctx.fp8->GathersFp8(param);
}

absl::Status GatherProjectionInput(const StepContext& ctx, const ModelParallel& mp,
                                   const Parameter& param, const Tensor& x,
                                   const Fp8Operand* x_fp8, Tensor* full, Tensor* scale_inv) {
  if (!GathersFp8(ctx, mp, param)) {
    *scale_inv = Tensor();
    return parallel::TpGather(x, mp.tp, mp.sequence_parallel, full);
  }
  Fp8Operand local;
  if (x_fp8 != nullptr) {
    MF_CHECK(!x_fp8->blockwise && x_fp8->codes.dim(0) == x.dim(0)) << param.name;
    local = *x_fp8;
  } else {
    MF_ASSIGN_OR_RETURN(local, ctx.fp8->QuantizeRowsForGather(param, x, /*grad=*/false, ctx.s()));
  }
  *scale_inv = local.scale_inv;
  return parallel::TpGather(local.codes, mp.tp, /*sequence_parallel=*/true, full);
}

const Fp8Operand* InputOperand(const Tensor& full, const Tensor& scale_inv, Fp8Operand* storage) {
  if (!scale_inv.defined()) return nullptr;
  *storage = Fp8Operand();
  storage->codes = full;
  storage->scale_inv = scale_inv;
  return storage;
}

absl::StatusOr<bool> GatherProjectionGrad(const StepContext& ctx, const ModelParallel& mp,
                                          const Parameter& param, const Tensor& d_y,
                                          Tensor* d_y_full, Fp8Operand* d_y_fp8) {
  if (!GathersFp8(ctx, mp, param)) {
    MF_RETURN_IF_ERROR(parallel::TpGather(d_y, mp.tp, mp.sequence_parallel, d_y_full));
    return false;
  }
  MF_ASSIGN_OR_RETURN(Fp8Operand local,
                      ctx.fp8->QuantizeRowsForGather(param, d_y, /*grad=*/true, ctx.s()));
  Fp8Operand gathered;
  MF_RETURN_IF_ERROR(
      parallel::TpGather(local.codes, mp.tp, /*sequence_parallel=*/true, &gathered.codes));
  const int64_t t = gathered.codes.dim(0), n = gathered.codes.dim(1);
  gathered.codes_t = Tensor::Empty({n, (t + kTokenBlock - 1) / kTokenBlock * kTokenBlock},
                                   gathered.codes.dtype(), gathered.codes.device());
  gathered.codes_t.RecordStream(ctx.s());
  ops::TransposePad(gathered.codes, &gathered.codes_t, ctx.s());
  gathered.scale_inv = local.scale_inv;
  *d_y_fp8 = std::move(gathered);
  *d_y_full = Tensor();
  return true;
}

}  // namespace moefold::model
