// FP8 training of the linear projections (docs/FORMULAS.md §18): the recipe, its per-site scaling
// state and the quantise-then-multiply GEMMs of the forward (x·Wᵀ), the input gradient (d_y·W)
// and the weight gradient (d_yᵀ·x) of every attention projection, dense MLP and expert projection.
// The embedding, LM head, router, norms and softmax never come here; masters, gradients and
// optimizer state stay f32.
//
// A site is one projection weight (a Parameter): forward operands in E4M3 — its input x and its
// weight (one scale per expert for stacked experts) — and the gradient d_y in the configured
// gradient format. Recipes:
//   delayed:   per-tensor scales from the amax history of earlier steps (optim::Fp8DelayedScaling);
//              this step's amaxes are max-reduced over the stage's ranks (TP×CP×DP) once per step
//              in EndStep, so every layout quantises with the same scales.
//   current:   per-tensor scales from the tensor's amax now, max-reduced over the ranks that hold
//              parts of it (TP×CP for dense projections, ETP for expert weights).
//   blockwise: 1×128 tiles of activations and gradients along K, 128×128 weight blocks, f32 (or
//              power-of-two) scales; nothing carried between steps.
// Invariant: one code path on both devices (the quantisation ops are bit-exact between them; the
// FP8 GEMM agrees within its accumulation tolerance).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/model/fp8_operand.h"
#include "core/model/model_parallel.h"
#include "core/model/step_context.h"
#include "core/parameter.h"
#include "optim/fp8_recipe.h"

namespace moefold::model {

enum class Fp8Recipe { kNone, kDelayed, kCurrent, kBlockwise };

// "none", "delayed", "current", "blockwise"; InvalidArgument naming the choices otherwise.
absl::StatusOr<Fp8Recipe> ParseFp8Recipe(absl::string_view name);

struct Fp8Options {
  Fp8Recipe recipe = Fp8Recipe::kNone;
  int amax_history = 16;                // delayed: steps of history (≥ 1)
  DType grad_format = DType::kFp8E5M2;  // d_y's format (kFp8E5M2 or kFp8E4M3)
  bool pow2_scales = false;             // blockwise: scales rounded down to powers of two
  // Fused producers (ops/fp8_fused.h): the layers hand over operands their producer already
  // quantised, where the recipe allows (delayed, blockwise; the current recipe needs the amax
  // before the cast). Bit-identical to off.
  bool fused_producers = true;
  // Where the experts span ranks, the MoE layer quantises its routed rows while permuting them
  // and dispatches FP8 codes and their scales, and its backward sends the experts' output
  // gradients as codes (core/model/fp8_dispatch.h); false: both in the activation dtype, and the
  // expert GEMMs quantise the received rows.
  bool dispatch = true;
  // Under sequence parallelism with TP > 1, per-tensor recipes all-gather FP8 codes instead of
  // the activation dtype (core/model/fp8_gather.h); bit-identical to off.
  bool sp_gather = true;
};

// FailedPrecondition naming the GPU when an FP8 recipe meets a GPU without FP8 tensor cores
// (compute capability below 8.9); OK otherwise.
absl::Status CheckFp8Device(Fp8Recipe recipe, int sm_major, int sm_minor,
                            const std::string& gpu_name);

class Fp8Training {
 public:
  // The sites are the projection weights of `params` (every parameter named "*qkv_proj.weight",
  // "*o_proj.weight", "*gate_up_proj.weight" or "*down_proj.weight"), in the set's order, which
  // is the same on every rank of a stage. `stage` reduces the delayed amaxes (null = one rank).
  // InvalidArgument for a bad option (amax_history < 1, a gradient format that is not FP8).
  static absl::StatusOr<std::unique_ptr<Fp8Training>> Create(const Fp8Options& options,
                                                             const ParameterSet& params,
                                                             const ModelParallel& mp,
                                                             parallel::Communicator* stage,
                                                             const Device& device);

  const Fp8Options& options() const { return options_; }

  // Once per step, after the last backward: the delayed recipe max-reduces the step's amaxes over
  // the stage and rolls the histories into new scales; the other recipes keep no state.
  absl::Status EndStep(Stream& stream);

  // The GEMMs (core/model/linear.h): a dense site is a grouped one of one expert.
  absl::Status Forward(const StepContext& ctx, const Parameter& param, int64_t first_expert,
                       const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts,
                       Tensor* y, float beta);
  // With `d_y_quantized` (a fused producer's, PrepareFusedGrad, or an FP8 gather's) the dgrad —
  // and, given its codes_t, the per-tensor wgrad — take d_y's codes from it; d_y itself is read
  // only where the operand lacks them (the blockwise wgrad's token tiles), and may be undefined
  // otherwise. With `x_quantized` (per tensor: x's codes as an FP8 gather made them, with their
  // scale) the wgrad takes xᵀ's codes as those codes transposed, which is what quantising xᵀ
  // with the same scale gives; x is then those codes.
  absl::Status Backward(const StepContext& ctx, const Parameter& param, int64_t first_expert,
                        const Tensor& x, const Tensor& w, const std::vector<int64_t>& counts,
                        const Tensor& d_y, Tensor* d_x, float dx_beta, Tensor* d_w,
                        const Fp8Operand* d_y_quantized = nullptr,
                        const Fp8Operand* x_quantized = nullptr);

  // Fused producers (core/model/fp8_operand.h). For the producer of `param`'s forward input x
  // (rows, k): allocates the operand's codes (and tile scales), sets the delayed recipe's scale and
  // amax slot of x, and returns true; false (nothing done) when options().fused_producers is off
  // or the recipe is current. The forward then takes the operand instead of x.
  bool PrepareFusedInput(const Parameter& param, int64_t rows, int64_t k, Stream& stream,
                         Fp8ProducerTarget* target);
  // The same for the output gradient d_y (rows, k) of the dense `param`, in the gradient format;
  // per tensor the target gets codes_t (k, rows rounded up to 128) for the wgrad as well.
  bool PrepareFusedGrad(const Parameter& param, int64_t rows, int64_t k, Stream& stream,
                        Fp8ProducerTarget* target);
  // FP8 all-gathers (core/model/fp8_gather.h): whether the sequence-parallel gather of `param`'s
  // forward input (column-parallel) or output gradient (row-parallel) moves FP8 codes: the
  // option is on, the recipe is per tensor (delayed, current) and the site is dense.
  bool GathersFp8(const Parameter& param) const;
  // This rank's rows (T/tp, k) of such a gathered tensor, quantised with the scale the whole
  // tensor gets in Forward/Backward: delayed, the site's scale (recording the rows' amax in its
  // slot, which the stage's max completes); current, the rows' amax max-reduced over TP×CP — the
  // amax of the gathered whole. The input (grad = false) in E4M3, the gradient in its format.
  absl::StatusOr<Fp8Operand> QuantizeRowsForGather(const Parameter& param, const Tensor& rows,
                                                   bool grad, Stream& stream);
  // y = x·Wᵀ with x already quantised (PrepareFusedInput then the producer).
  absl::Status Forward(const StepContext& ctx, const Parameter& param, int64_t first_expert,
                       const Fp8Operand& x, const Tensor& w, const std::vector<int64_t>& counts,
                       Tensor* y, float beta);

  // The FP8 token dispatch (core/model/fp8_dispatch.h) of the expert site `param`: the scale the
  // rows that travel towards its experts are cast with — its input rows in E4M3, or with
  // `gradient` its output-gradient rows (the combine's backward) in the gradient format. Per
  // tensor (delayed, current): the scale, its inverse and, delayed only, the site's amax slot of
  // those rows (the cast records their amax there, as the expert GEMM's own cast would have);
  // current: the amax of `rows` (N, H) now, max-reduced over TP×CP (the ranks holding the
  // micro-batch's tokens). Blockwise: none (tiles).
  struct DispatchScale {
    Tensor scale, scale_inv, amax;  // (1) f32 each; amax undefined unless delayed
  };
  absl::StatusOr<DispatchScale> DispatchScaleOf(const Parameter& param, const Tensor& rows,
                                                bool gradient, Stream& stream);
  // Forward and Backward with the input rows already quantised: codes (T, in) kFp8E4M3 as
  // received, scale_inv (T, 1) per row (current), (T, in/128) per tile (blockwise) or undefined
  // (delayed: the site's scale). Forward multiplies the codes as they are. Backward's weight
  // gradient takes xᵀ's codes as the codes transposed (delayed: bit-identical to quantising xᵀ)
  // or, where xᵀ needs new scales (current, blockwise), quantises the dequantised rows.
  absl::Status ForwardCodes(const StepContext& ctx, const Parameter& param, int64_t first_expert,
                            const Tensor& codes, const Tensor& scale_inv, const Tensor& w,
                            const std::vector<int64_t>& counts, Tensor* y, float beta);
  absl::Status BackwardCodes(const StepContext& ctx, const Parameter& param,
                             int64_t first_expert, const Tensor& codes, const Tensor& scale_inv,
                             const Tensor& w, const std::vector<int64_t>& counts,
                             const Tensor& d_y, Tensor* d_x, float dx_beta, Tensor* d_w);

  // Backward with the output gradient's rows received as codes: d_y_codes (T, out) in the
  // gradient format with d_y_scale_inv (T, 1) per row (current), (T, out/128) per tile
  // (blockwise) or undefined (delayed: the site's gradient scale). The input gradient multiplies
  // the codes as they are; the weight gradient takes d_yᵀ's codes as the codes transposed
  // (delayed: bit-identical to quantising d_yᵀ) or quantises the dequantised rows again where
  // d_yᵀ needs new scales (current, blockwise). x (T, in) is the forward input as saved.
  absl::Status BackwardGradCodes(const StepContext& ctx, const Parameter& param,
                                 int64_t first_expert, const Tensor& x, const Tensor& w,
                                 const std::vector<int64_t>& counts, const Tensor& d_y_codes,
                                 const Tensor& d_y_scale_inv, Tensor* d_x, float dx_beta,
                                 Tensor* d_w);

  // Checkpoint state of the delayed recipe, per site (empty for the other recipes): the forward
  // operands' history (L, 1 + experts) and scales (1 + experts), the gradient's history (L, 1)
  // and scale (1), as host copies named "<weight name>.fp8_history" etc.
  std::vector<std::pair<std::string, Tensor>> SaveState() const;
  // Restores one of SaveState's tensors (host f32 of the same shape); InvalidArgument naming it
  // when the name is unknown or the shape differs (another amax_history, another model).
  absl::Status RestoreState(const std::string& name, const Tensor& host);

 private:
  struct Site {
    std::string name;
    bool expert = false;
    int64_t experts = 1;   // weight scales (global experts of a stacked weight, else 1)
    int64_t fwd_base = 0;  // forward slot of x; the weights' follow
    int64_t grad_slot = 0;
  };
  struct Scale {
    Tensor scale, scale_inv;  // (1) f32 on the device
  };

  Fp8Training(const Fp8Options& options, const ModelParallel& mp, parallel::Communicator* stage)
      : options_(options), mp_(mp), stage_(stage) {}
  const Site& SiteOf(const Parameter& param) const;
  // The per-tensor scale of `x` in `format` at slot `slot` of the forward (grad = false) or
  // gradient group: the delayed views (recording x's amax), or computed now over `comm`.
  absl::StatusOr<Scale> TensorScale(const Tensor& x, bool grad, int64_t slot,
                                    parallel::Communicator* comm, Stream& stream);
  // The forward slot of the weight of local expert first_expert + e (the dense weight: e = 0).
  int64_t WeightSlot(const Site& site, const Parameter& param, int64_t first_expert,
                     size_t e) const;
  parallel::Communicator* ActivationComm(const Site& site) const;
  parallel::Communicator* WeightComm(const Site& site) const;

  Fp8Options options_;
  ModelParallel mp_;
  parallel::Communicator* stage_ = nullptr;
  std::map<const Parameter*, Site> sites_;
  std::vector<const Site*> order_;  // the sites in slot order
  std::unique_ptr<optim::Fp8DelayedScaling> fwd_, grad_;  // delayed only
};

}  // namespace moefold::model
