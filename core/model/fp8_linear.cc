// FP8 projections: per-tensor recipes cast with ops::CastTransposeAmax, blockwise with
// ops::QuantizeBlockwise, and every product through ops::Fp8Gemm in the TN layout
// (docs/FORMULAS.md §18.2):
//   forward  y   = x·Wᵀ    a = x (T, in),            b = W (out, in)
//   dgrad    d_x = d_y·W   a = d_y (T, out),         b = Wᵀ (in, out)
//   wgrad    d_w += d_yᵀ·x a = d_yᵀ (out, T'),       b = xᵀ (in, T')
// where T' is T rounded up to 128 with zero columns (a zero changes neither an amax nor a sum),
// so a K made of tokens always divides into blocks. The backward quantises x and W again with
// the forward's scales rather than keeping FP8 copies (the saved activations stay as they are).
#include "core/model/fp8_linear.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "ops/fp8.h"
#include "ops/fp8_gemm.h"

namespace moefold::model {
namespace {

constexpr int64_t kBlock = 128;

int64_t RoundUp(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

bool EndsWith(const std::string& s, absl::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(),
                                                std::string(suffix)) == 0;
}

bool IsProjection(const std::string& name) {
  for (absl::string_view suffix :
       {"qkv_proj.weight", "o_proj.weight", "gate_up_proj.weight", "down_proj.weight"}) {
    if (EndsWith(name, suffix)) return true;
  }
  return false;
}

// Every collective orders itself after the device's default stream only.
absl::Status MaxOverRanks(parallel::Communicator* comm, Tensor* amax, Stream& stream) {
  if (parallel::IsSingleRank(comm)) return absl::OkStatus();
  if (amax->device().is_cuda() && &stream != &DefaultStream(amax->device())) stream.Synchronize();
  return parallel::WaitFor(comm->AllReduce(amax, {.op = parallel::ReduceOp::kMax}));
}

// A temporary of work on `stream` (freed only after that work on a GPU).
Tensor Temp(const Shape& shape, DType dtype, const Device& device, const Stream& stream) {
  Tensor t = Tensor::Empty(shape, dtype, device);
  t.RecordStream(stream);
  return t;
}

// fp8(x·scale) (M, N), or its transpose (N, M).
Tensor Cast(const Tensor& x, const Tensor& scale, DType format, bool transposed, Stream& stream) {
  Tensor q = Temp(transposed ? Shape{x.dim(1), x.dim(0)} : Shape{x.dim(0), x.dim(1)}, format,
                  x.device(), stream);
  ops::CastTransposeAmax(x, scale, transposed ? nullptr : &q, transposed ? &q : nullptr, nullptr,
                         stream);
  return q;
}

// x (M, N) → x padded and transposed, (N, RoundUp(M, 128)), in x's dtype.
Tensor PaddedTranspose(const Tensor& x, Stream& stream) {
  Tensor t = Temp({x.dim(1), RoundUp(x.dim(0), kBlock)}, x.dtype(), x.device(), stream);
  ops::TransposePad(x, &t, stream);
  return t;
}

struct Blocks {
  Tensor q, scale_inv;
};

absl::StatusOr<Blocks> QuantizeBlocks(const Tensor& x, const ops::Fp8BlockShape& block,
                                      DType format, bool pow2, Stream& stream) {
  Blocks b;
  b.q = Temp(x.shape(), format, x.device(), stream);
  b.scale_inv = Temp({x.dim(0) / block.rows, x.dim(1) / block.cols}, DType::kF32, x.device(),
                     stream);
  MF_RETURN_IF_ERROR(ops::QuantizeBlockwise(x, block, {.pow2 = pow2}, &b.q, &b.scale_inv, stream));
  return b;
}

}  // namespace

absl::StatusOr<Fp8Recipe> ParseFp8Recipe(absl::string_view name) {
  if (name == "none") return Fp8Recipe::kNone;
  if (name == "delayed") return Fp8Recipe::kDelayed;
  if (name == "current") return Fp8Recipe::kCurrent;
  if (name == "blockwise") return Fp8Recipe::kBlockwise;
  return absl::InvalidArgumentError(absl::StrCat(
      "precision.fp8_recipe \"", name, "\" is not one of: none, delayed, current, blockwise"));
}

absl::Status CheckFp8Device(Fp8Recipe recipe, int sm_major, int sm_minor,
                            const std::string& gpu_name) {
  if (recipe == Fp8Recipe::kNone || sm_major * 10 + sm_minor >= 89) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "precision.fp8_recipe needs a GPU with FP8 tensor cores (compute capability 8.9 or "
      "newer); ",
      gpu_name, " has ", sm_major, ".", sm_minor));
}

absl::StatusOr<std::unique_ptr<Fp8Training>> Fp8Training::Create(const Fp8Options& options,
                                                                  const ParameterSet& params,
                                                                  const ModelParallel& mp,
                                                                  parallel::Communicator* stage,
                                                                  const Device& device) {
  if (options.grad_format != DType::kFp8E4M3 && options.grad_format != DType::kFp8E5M2) {
    return absl::InvalidArgumentError(absl::StrCat("Fp8Training: gradient format ",
                                                   DTypeName(options.grad_format),
                                                   " is not an FP8 dtype"));
  }
  std::unique_ptr<Fp8Training> t(new Fp8Training(options, mp, stage));
  int64_t fwd = 0, grad = 0;
  for (const auto& p : params.params()) {
    if (!IsProjection(p->name)) continue;
    Site site;
    site.name = p->name;
    site.expert = p->sharding.expert_dim >= 0;
    site.experts = site.expert ? p->sharding.global_shape[p->sharding.expert_dim] : 1;
    site.fwd_base = fwd;
    site.grad_slot = grad;
    fwd += 1 + site.experts;
    grad += 1;
    t->sites_[p.get()] = site;
  }
  for (const auto& p : params.params()) {
    auto it = t->sites_.find(p.get());
    if (it != t->sites_.end()) t->order_.push_back(&it->second);
  }
  if (options.recipe == Fp8Recipe::kDelayed) {
    MF_ASSIGN_OR_RETURN(
        optim::Fp8DelayedScaling f,
        optim::Fp8DelayedScaling::Create(
            fwd, {.amax_history = options.amax_history, .format = DType::kFp8E4M3}, device));
    MF_ASSIGN_OR_RETURN(
        optim::Fp8DelayedScaling g,
        optim::Fp8DelayedScaling::Create(
            grad, {.amax_history = options.amax_history, .format = options.grad_format}, device));
    t->fwd_ = std::make_unique<optim::Fp8DelayedScaling>(std::move(f));
    t->grad_ = std::make_unique<optim::Fp8DelayedScaling>(std::move(g));
  }
  return t;
}

absl::Status Fp8Training::EndStep(Stream& stream) {
  if (options_.recipe != Fp8Recipe::kDelayed) return absl::OkStatus();
  MF_RETURN_IF_ERROR(fwd_->Update(stage_, stream));
  return grad_->Update(stage_, stream);
}

const Fp8Training::Site& Fp8Training::SiteOf(const Parameter& param) const {
  auto it = sites_.find(&param);
  MF_CHECK(it != sites_.end()) << "FP8: " << param.name << " is not a projection weight";
  return it->second;
}

int64_t Fp8Training::WeightSlot(const Site& site, const Parameter& param, int64_t first_expert,
                                size_t e) const {
  // Expert slots are global: this rank's experts start at the parameter's expert offset.
  const int64_t expert =
      site.expert ? param.sharding.expert_offset + first_expert + static_cast<int64_t>(e) : 0;
  MF_CHECK(expert < site.experts) << site.name << ": expert " << expert;
  return site.fwd_base + 1 + expert;
}

parallel::Communicator* Fp8Training::ActivationComm(const Site& site) const {
  // Expert rows are this rank's own; a dense projection's operand is spread over TP×CP.
  return site.expert ? nullptr : mp_.tp_cp;
}

parallel::Communicator* Fp8Training::WeightComm(const Site& site) const {
  return site.expert ? mp_.experts.etp : mp_.tp_cp;
}

absl::StatusOr<Fp8Training::Scale> Fp8Training::TensorScale(const Tensor& x, bool grad,
                                                           int64_t slot,
                                                           parallel::Communicator* comm,
                                                           Stream& stream) {
  const Tensor flat = x.Reshape({x.numel() == 0 ? 0 : x.numel() / x.dim(-1), x.dim(-1)});
  if (options_.recipe == Fp8Recipe::kDelayed) {
    optim::Fp8DelayedScaling& group = grad ? *grad_ : *fwd_;
    Tensor amax = group.amax(slot);
    ops::CastTransposeAmax(flat, group.scale(slot), nullptr, nullptr, &amax, stream);
    return Scale{group.scale(slot), group.scale_inv(slot)};
  }
  // Current scaling: amax now, over the ranks holding parts of the tensor; scale 1 stays where the
  // amax is zero or not finite.
  Scale s{Temp({1}, DType::kF32, x.device(), stream), Temp({1}, DType::kF32, x.device(), stream)};
  Tensor amax = Temp({1}, DType::kF32, x.device(), stream);
  amax.SetZero(stream);
  s.scale.Fill(1.0f);
  ops::CastTransposeAmax(flat, s.scale, nullptr, nullptr, &amax, stream);
  MF_RETURN_IF_ERROR(MaxOverRanks(comm, &amax, stream));
  ops::Fp8UpdateScales(ops::Fp8Max(grad ? options_.grad_format : DType::kFp8E4M3), &amax, nullptr,
                       &s.scale, &s.scale_inv, stream);
  return s;
}

bool Fp8Training::PrepareFusedInput(const Parameter& param, int64_t rows, int64_t k,
                                    Stream& stream, Fp8ProducerTarget* target) {
  if (!options_.fused_producers || options_.recipe == Fp8Recipe::kCurrent) return false;
  const Site& site = SiteOf(param);
  const Device& device = stream.device();
  Fp8ProducerTarget t;
  t.operand.codes = Temp({rows, k}, DType::kFp8E4M3, device, stream);
  if (options_.recipe == Fp8Recipe::kBlockwise) {
    t.operand.blockwise = true;
    t.operand.scale_inv = Temp({rows, k / kBlock}, DType::kF32, device, stream);
    t.pow2 = options_.pow2_scales;
  } else {
    // The slot TensorScale(x) records x's amax into and takes x's scale from.
    t.scale = fwd_->scale(site.fwd_base);
    t.amax = fwd_->amax(site.fwd_base);
    t.operand.scale_inv = fwd_->scale_inv(site.fwd_base);
  }
  *target = std::move(t);
  return true;
}

bool Fp8Training::PrepareFusedGrad(const Parameter& param, int64_t rows, int64_t k,
                                   Stream& stream, Fp8ProducerTarget* target) {
  if (!options_.fused_producers || options_.recipe == Fp8Recipe::kCurrent) return false;
  const Site& site = SiteOf(param);
  MF_CHECK(!site.expert) << site.name << ": fused gradients are for dense projections";
  const Device& device = stream.device();
  Fp8ProducerTarget t;
  t.operand.codes = Temp({rows, k}, options_.grad_format, device, stream);
  if (options_.recipe == Fp8Recipe::kBlockwise) {
    t.operand.blockwise = true;
    t.operand.scale_inv = Temp({rows, k / kBlock}, DType::kF32, device, stream);
    t.pow2 = options_.pow2_scales;
  } else {
    t.operand.codes_t = Temp({k, RoundUp(rows, kBlock)}, options_.grad_format, device, stream);
    t.scale = grad_->scale(site.grad_slot);
    t.amax = grad_->amax(site.grad_slot);
    t.operand.scale_inv = grad_->scale_inv(site.grad_slot);
  }
  *target = std::move(t);
  return true;
}

bool Fp8Training::GathersFp8(const Parameter& param) const {
  return options_.sp_gather && options_.recipe != Fp8Recipe::kBlockwise && !SiteOf(param).expert;
}

absl::StatusOr<Fp8Operand> Fp8Training::QuantizeRowsForGather(const Parameter& param,
                                                               const Tensor& rows, bool grad,
                                                               Stream& stream) {
  MF_CHECK(GathersFp8(param)) << param.name << ": no FP8 gather under this recipe";
  const Site& site = SiteOf(param);
  const int64_t slot = grad ? site.grad_slot : site.fwd_base;
  const DType format = grad ? options_.grad_format : DType::kFp8E4M3;
  Fp8Operand q;
  if (options_.recipe == Fp8Recipe::kDelayed) {
    // The scale is known: the cast and the amax in one pass (TensorScale + Cast make two).
    optim::Fp8DelayedScaling& group = grad ? *grad_ : *fwd_;
    Tensor amax = group.amax(slot);
    q.codes = Temp(rows.shape(), format, rows.device(), stream);
    ops::CastTransposeAmax(rows, group.scale(slot), &q.codes, nullptr, &amax, stream);
    q.scale_inv = group.scale_inv(slot);
    return q;
  }
  MF_ASSIGN_OR_RETURN(Scale s, TensorScale(rows, grad, slot, ActivationComm(site), stream));
  q.codes = Cast(rows, s.scale, format, false, stream);
  q.scale_inv = s.scale_inv;
  return q;
}

absl::Status Fp8Training::Forward(const StepContext& ctx, const Parameter& param,
                                  int64_t first_expert, const Tensor& x, const Tensor& w,
                                  const std::vector<int64_t>& counts, Tensor* y, float beta) {
  const Site& site = SiteOf(param);
  Stream& stream = ctx.s();
  Fp8Operand qx;
  if (options_.recipe == Fp8Recipe::kBlockwise) {
    MF_ASSIGN_OR_RETURN(Blocks b, QuantizeBlocks(x, ops::kFp8ActivationTile, DType::kFp8E4M3,
                                                 options_.pow2_scales, stream));
    qx.codes = b.q;
    qx.scale_inv = b.scale_inv;
    qx.blockwise = true;
  } else {
    MF_ASSIGN_OR_RETURN(Scale sx,
                        TensorScale(x, false, site.fwd_base, ActivationComm(site), stream));
    qx.codes = Cast(x, sx.scale, DType::kFp8E4M3, false, stream);
    qx.scale_inv = sx.scale_inv;
  }
  return Forward(ctx, param, first_expert, qx, w, counts, y, beta);
}

absl::Status Fp8Training::Forward(const StepContext& ctx, const Parameter& param,
                                  int64_t first_expert, const Fp8Operand& qx, const Tensor& w,
                                  const std::vector<int64_t>& counts, Tensor* y, float beta) {
  const Site& site = SiteOf(param);
  Stream& stream = ctx.s();
  MF_CHECK_EQ(static_cast<int64_t>(counts.size()), w.dim(0)) << site.name;
  MF_CHECK_EQ(qx.blockwise, options_.recipe == Fp8Recipe::kBlockwise) << site.name;
  if (qx.blockwise) {
    int64_t row = 0;
    for (size_t e = 0; e < counts.size(); ++e) {
      const int64_t n = counts[e];
      if (n == 0) continue;
      MF_ASSIGN_OR_RETURN(Blocks qw, QuantizeBlocks(w.Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)}),
                                                    ops::kFp8WeightBlock, DType::kFp8E4M3,
                                                    options_.pow2_scales, stream));
      Tensor out = y->Slice(row, row + n);
      MF_RETURN_IF_ERROR(ops::Fp8Gemm(qx.codes.Slice(row, row + n),
                                      qx.scale_inv.Slice(row, row + n), qw.q, qw.scale_inv,
                                      {.block_k = kBlock}, beta, &out, stream));
      row += n;
    }
    return absl::OkStatus();
  }
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t n = counts[e];
    const Tensor we = w.Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
    // Every weight's scale is taken (and its amax recorded) even without rows, so the ranks of
    // the weight's group always meet in the same collectives.
    MF_ASSIGN_OR_RETURN(Scale sw, TensorScale(we, false, WeightSlot(site, param, first_expert, e),
                                              WeightComm(site), stream));
    if (n == 0) continue;
    const Tensor qw = Cast(we, sw.scale, DType::kFp8E4M3, false, stream);
    Tensor out = y->Slice(row, row + n);
    MF_RETURN_IF_ERROR(ops::Fp8Gemm(qx.codes.Slice(row, row + n), qx.scale_inv, qw, sw.scale_inv,
                                    {.fast_accumulation = true}, beta, &out, stream));
    row += n;
  }
  return absl::OkStatus();
}

absl::Status Fp8Training::Backward(const StepContext& ctx, const Parameter& param,
                                   int64_t first_expert, const Tensor& x, const Tensor& w,
                                   const std::vector<int64_t>& counts, const Tensor& d_y,
                                   Tensor* d_x, float dx_beta, Tensor* d_w,
                                   const Fp8Operand* d_y_quantized,
                                   const Fp8Operand* x_quantized) {
  const Site& site = SiteOf(param);
  Stream& stream = ctx.s();
  const DType gf = options_.grad_format;
  const bool blockwise = options_.recipe == Fp8Recipe::kBlockwise;
  const bool pow2 = options_.pow2_scales;
  Scale sx, sdy;
  Tensor qdy;
  Blocks bdy;
  const Fp8Operand* fused = d_y_quantized;
  if (fused != nullptr) {
    // Per tensor a fused producer needs the delayed recipe (its scale is known before the
    // producer runs); an FP8 gather brings the transposed codes under either recipe.
    MF_CHECK(fused->blockwise == blockwise && counts.size() == 1 &&
             (blockwise || options_.recipe == Fp8Recipe::kDelayed || fused->codes_t.defined()))
        << site.name;
    MF_CHECK(fused->codes.dtype() == gf) << site.name << ": " << fused->codes.DebugString();
  }
  if (x_quantized != nullptr) {
    MF_CHECK(!blockwise && !x_quantized->blockwise && counts.size() == 1) << site.name;
    MF_CHECK(x_quantized->codes.dtype() == DType::kFp8E4M3) << site.name;
  }
  if (blockwise && fused != nullptr) {
    bdy = Blocks{fused->codes, fused->scale_inv};
  } else if (blockwise) {
    MF_ASSIGN_OR_RETURN(bdy, QuantizeBlocks(d_y, ops::kFp8ActivationTile, gf, pow2, stream));
  } else {
    if (fused != nullptr) {  // the producer recorded d_y's amax with this slot's scale
      sdy.scale_inv = fused->scale_inv;
      if (options_.recipe == Fp8Recipe::kDelayed) sdy.scale = grad_->scale(site.grad_slot);
      qdy = fused->codes;
    } else {
      MF_ASSIGN_OR_RETURN(sdy,
                          TensorScale(d_y, true, site.grad_slot, ActivationComm(site), stream));
      qdy = Cast(d_y, sdy.scale, gf, false, stream);
    }
    if (d_w != nullptr && x_quantized != nullptr) {
      sx.scale_inv = x_quantized->scale_inv;
    } else if (d_w != nullptr) {
      MF_ASSIGN_OR_RETURN(sx,
                          TensorScale(x, false, site.fwd_base, ActivationComm(site), stream));
    }
  }
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t n = counts[e];
    const Tensor we = w.Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
    Scale sw;
    if (!blockwise && d_x != nullptr) {
      MF_ASSIGN_OR_RETURN(sw, TensorScale(we, false, WeightSlot(site, param, first_expert, e),
                                          WeightComm(site), stream));
    }
    if (n == 0) continue;
    const Tensor xe = x.Slice(row, row + n);
    // d_y's rows where its codes do not come with the operand (undefined d_y otherwise).
    auto dye = [&] { return d_y.Slice(row, row + n); };
    if (d_x != nullptr) {
      Tensor out = d_x->Slice(row, row + n);
      if (blockwise) {
        // Wᵀ's 128×128 blocks are W's blocks transposed: the same scales, the codes transposed.
        const Tensor wt = PaddedTranspose(we, stream);  // (in, out): out is a multiple of 128
        MF_ASSIGN_OR_RETURN(Blocks bw, QuantizeBlocks(wt, ops::kFp8WeightBlock, DType::kFp8E4M3,
                                                      pow2, stream));
        MF_RETURN_IF_ERROR(ops::Fp8Gemm(bdy.q.Slice(row, row + n),
                                        bdy.scale_inv.Slice(row, row + n), bw.q, bw.scale_inv,
                                        {.block_k = kBlock}, dx_beta, &out, stream));
      } else {
        const Tensor qwt = Cast(we, sw.scale, DType::kFp8E4M3, true, stream);
        MF_RETURN_IF_ERROR(ops::Fp8Gemm(qdy.Slice(row, row + n), sdy.scale_inv, qwt,
                                        sw.scale_inv, {}, dx_beta, &out, stream));
      }
    }
    if (d_w != nullptr) {
      Tensor dw = d_w->Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
      if (blockwise) {
        const Tensor xt = PaddedTranspose(xe, stream);
        const Tensor dyt = PaddedTranspose(dye(), stream);
        MF_ASSIGN_OR_RETURN(Blocks bxt, QuantizeBlocks(xt, ops::kFp8ActivationTile,
                                                       DType::kFp8E4M3, pow2, stream));
        MF_ASSIGN_OR_RETURN(Blocks bdyt,
                            QuantizeBlocks(dyt, ops::kFp8ActivationTile, gf, pow2, stream));
        MF_RETURN_IF_ERROR(ops::Fp8Gemm(bdyt.q, bdyt.scale_inv, bxt.q, bxt.scale_inv,
                                        {.block_k = kBlock}, 1.0f, &dw, stream));
      } else {
        // The gathered codes transposed are exactly Cast(PaddedTranspose(x)) (same scale; the
        // zero padding casts to the zero code), as the producer's codes_t are for d_y.
        const Tensor qxt = x_quantized != nullptr
                               ? PaddedTranspose(xe, stream)
                               : Cast(PaddedTranspose(xe, stream), sx.scale, DType::kFp8E4M3,
                                      false, stream);
        const Tensor qdyt = fused != nullptr && fused->codes_t.defined()
                                ? fused->codes_t
                                : Cast(PaddedTranspose(dye(), stream), sdy.scale, gf, false,
                                       stream);
        MF_RETURN_IF_ERROR(ops::Fp8Gemm(qdyt, sdy.scale_inv, qxt, sx.scale_inv, {}, 1.0f, &dw,
                                        stream));
      }
    }
    row += n;
  }
  return absl::OkStatus();
}

std::vector<std::pair<std::string, Tensor>> Fp8Training::SaveState() const {
  std::vector<std::pair<std::string, Tensor>> out;
  if (options_.recipe != Fp8Recipe::kDelayed) return out;
  const Tensor fh = fwd_->history().To(Device::Cpu()), fs = fwd_->scales().To(Device::Cpu());
  const Tensor gh = grad_->history().To(Device::Cpu()), gs = grad_->scales().To(Device::Cpu());
  const int64_t l = options_.amax_history;
  // Columns [first, first + n) of an (L, T) history, and the matching scales.
  auto columns = [l](const Tensor& h, int64_t first, int64_t n) {
    Tensor t = Tensor::Empty({l, n}, DType::kF32);
    for (int64_t r = 0; r < l; ++r) {
      for (int64_t c = 0; c < n; ++c) {
        t.data<float>()[r * n + c] = h.data<float>()[r * h.dim(1) + first + c];
      }
    }
    return t;
  };
  for (const Site* s : order_) {
    const int64_t n = 1 + s->experts;
    out.emplace_back(s->name + ".fp8_history", columns(fh, s->fwd_base, n));
    out.emplace_back(s->name + ".fp8_scale", fs.Slice(s->fwd_base, s->fwd_base + n).Clone());
    out.emplace_back(s->name + ".fp8_grad_history", columns(gh, s->grad_slot, 1));
    out.emplace_back(s->name + ".fp8_grad_scale", gs.Slice(s->grad_slot, s->grad_slot + 1).Clone());
  }
  return out;
}

absl::Status Fp8Training::RestoreState(const std::string& name, const Tensor& host) {
  if (options_.recipe != Fp8Recipe::kDelayed) return absl::OkStatus();
  for (const Site* s : order_) {
    if (name.rfind(s->name + ".fp8_", 0) != 0) continue;
    const std::string what = name.substr(s->name.size() + 5);
    const bool grad = what == "grad_history" || what == "grad_scale";
    const bool history = what == "history" || what == "grad_history";
    if (!grad && what != "history" && what != "scale") break;
    optim::Fp8DelayedScaling& group = grad ? *grad_ : *fwd_;
    const int64_t first = grad ? s->grad_slot : s->fwd_base, n = grad ? 1 : 1 + s->experts;
    const int64_t l = options_.amax_history;
    const Shape want = history ? Shape{l, n} : Shape{n};
    if (host.shape() != want || host.dtype() != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat("FP8 state ", name, " is ", host.DebugString(), ", this run needs f32",
                       ShapeToString(want), history ? " (precision.amax_history differs?)" : ""));
    }
    if (history) {
      Tensor h = group.history().To(Device::Cpu());
      for (int64_t r = 0; r < l; ++r) {
        for (int64_t c = 0; c < n; ++c) {
          h.data<float>()[r * h.dim(1) + first + c] = host.data<float>()[r * n + c];
        }
      }
      group.history().CopyFrom(h);
    } else {
      Tensor sc = group.scales().To(Device::Cpu()), inv = group.scale_invs().To(Device::Cpu());
      for (int64_t c = 0; c < n; ++c) {
        sc.data<float>()[first + c] = host.data<float>()[c];
        inv.data<float>()[first + c] = 1.0f / host.data<float>()[c];  // as Fp8UpdateScales
      }
      group.scales().CopyFrom(sc);
      group.scale_invs().CopyFrom(inv);
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("FP8 state ", name, ": no such site"));
}

absl::StatusOr<Fp8Training::DispatchScale> Fp8Training::DispatchScaleOf(const Parameter& param,
                                                                        const Tensor& rows,
                                                                        bool gradient,
                                                                        Stream& stream) {
  const Site& site = SiteOf(param);
  MF_CHECK(site.expert) << "FP8 dispatch: " << site.name << " is not an expert projection";
  const int64_t slot = gradient ? site.grad_slot : site.fwd_base;
  DispatchScale d;
  if (options_.recipe == Fp8Recipe::kDelayed) {
    optim::Fp8DelayedScaling& group = gradient ? *grad_ : *fwd_;
    d = {group.scale(slot), group.scale_inv(slot), group.amax(slot)};
  } else if (options_.recipe == Fp8Recipe::kCurrent) {
    // The whole micro-batch's amax: every rank holding its tokens gets the same scale, so rows
    // that meet on an expert's rank are cast as one rank would cast them.
    MF_ASSIGN_OR_RETURN(Scale sc, TensorScale(rows, gradient, slot, mp_.tp_cp, stream));
    d.scale = sc.scale;
    d.scale_inv = sc.scale_inv;
  }
  return d;
}

absl::Status Fp8Training::ForwardCodes(const StepContext& ctx, const Parameter& param,
                                       int64_t first_expert, const Tensor& codes,
                                       const Tensor& scale_inv, const Tensor& w,
                                       const std::vector<int64_t>& counts, Tensor* y,
                                       float beta) {
  const Site& site = SiteOf(param);
  Stream& stream = ctx.s();
  MF_CHECK_EQ(static_cast<int64_t>(counts.size()), w.dim(0)) << site.name;
  const bool blockwise = options_.recipe == Fp8Recipe::kBlockwise;
  const bool per_row = scale_inv.defined();
  MF_CHECK(per_row || options_.recipe == Fp8Recipe::kDelayed)
      << site.name << ": received FP8 rows without their scales";
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t n = counts[e];
    const Tensor we = w.Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
    Tensor out = y->Slice(row, row + n);
    const Tensor a = codes.Slice(row, row + n);
    if (blockwise) {
      if (n == 0) continue;
      MF_ASSIGN_OR_RETURN(Blocks qw, QuantizeBlocks(we, ops::kFp8WeightBlock, DType::kFp8E4M3,
                                                    options_.pow2_scales, stream));
      MF_RETURN_IF_ERROR(ops::Fp8Gemm(a, scale_inv.Slice(row, row + n), qw.q, qw.scale_inv,
                                      {.block_k = kBlock}, beta, &out, stream));
      row += n;
      continue;
    }
    // As Forward: every weight's scale is taken even without rows.
    MF_ASSIGN_OR_RETURN(Scale sw, TensorScale(we, false, WeightSlot(site, param, first_expert, e),
                                              WeightComm(site), stream));
    if (n == 0) continue;
    const Tensor qw = Cast(we, sw.scale, DType::kFp8E4M3, false, stream);
    const Tensor sa = per_row ? scale_inv.Slice(row, row + n) : fwd_->scale_inv(site.fwd_base);
    MF_RETURN_IF_ERROR(ops::Fp8Gemm(a, sa, qw, sw.scale_inv, {.fast_accumulation = true}, beta,
                                    &out, stream));
    row += n;
  }
  return absl::OkStatus();
}

absl::Status Fp8Training::BackwardCodes(const StepContext& ctx, const Parameter& param,
                                        int64_t first_expert, const Tensor& codes,
                                        const Tensor& scale_inv, const Tensor& w,
                                        const std::vector<int64_t>& counts, const Tensor& d_y,
                                        Tensor* d_x, float dx_beta, Tensor* d_w) {
  Stream& stream = ctx.s();
  if (options_.recipe != Fp8Recipe::kDelayed) {
    // xᵀ's tiles (blockwise) or per-tensor scale (current) differ from the rows': quantise the
    // received values again, dequantised in f32 (code·scale rounded once, on every layout alike).
    Tensor x = Temp(codes.shape(), DType::kF32, codes.device(), stream);
    const ops::Fp8BlockShape block = options_.recipe == Fp8Recipe::kBlockwise
                                         ? ops::kFp8ActivationTile
                                         : ops::Fp8BlockShape{1, codes.dim(1)};
    if (codes.numel() > 0) {
      MF_RETURN_IF_ERROR(ops::DequantizeBlockwise(codes, scale_inv, block, &x, stream));
    }
    return Backward(ctx, param, first_expert, x, w, counts, d_y, d_x, dx_beta, d_w);
  }
  // Delayed: Backward's per-tensor path; xᵀ's codes are the received codes transposed (the
  // transpose of fp8(x·s) is fp8(xᵀ·s), and the zero padding casts to the zero code).
  const Site& site = SiteOf(param);
  const DType gf = options_.grad_format;
  MF_ASSIGN_OR_RETURN(Scale sdy,
                      TensorScale(d_y, true, site.grad_slot, ActivationComm(site), stream));
  const Tensor qdy = Cast(d_y, sdy.scale, gf, false, stream);
  const Tensor sx_inv = fwd_->scale_inv(site.fwd_base);
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t n = counts[e];
    const Tensor we = w.Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
    Scale sw;
    if (d_x != nullptr) {
      MF_ASSIGN_OR_RETURN(sw, TensorScale(we, false, WeightSlot(site, param, first_expert, e),
                                          WeightComm(site), stream));
    }
    if (n == 0) continue;
    if (d_x != nullptr) {
      Tensor out = d_x->Slice(row, row + n);
      const Tensor qwt = Cast(we, sw.scale, DType::kFp8E4M3, true, stream);
      MF_RETURN_IF_ERROR(ops::Fp8Gemm(qdy.Slice(row, row + n), sdy.scale_inv, qwt, sw.scale_inv,
                                      {}, dx_beta, &out, stream));
    }
    if (d_w != nullptr) {
      Tensor dw = d_w->Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
      const Tensor qxt = PaddedTranspose(codes.Slice(row, row + n), stream);
      const Tensor qdyt = Cast(PaddedTranspose(d_y.Slice(row, row + n), stream), sdy.scale, gf,
                               false, stream);
      MF_RETURN_IF_ERROR(ops::Fp8Gemm(qdyt, sdy.scale_inv, qxt, sx_inv, {}, 1.0f, &dw, stream));
    }
    row += n;
  }
  return absl::OkStatus();
}

absl::Status Fp8Training::BackwardGradCodes(const StepContext& ctx, const Parameter& param,
                                            int64_t first_expert, const Tensor& x,
                                            const Tensor& w, const std::vector<int64_t>& counts,
                                            const Tensor& d_y_codes, const Tensor& d_y_scale_inv,
                                            Tensor* d_x, float dx_beta, Tensor* d_w) {
  const Site& site = SiteOf(param);
  Stream& stream = ctx.s();
  const DType gf = options_.grad_format;
  const bool blockwise = options_.recipe == Fp8Recipe::kBlockwise;
  const bool delayed = options_.recipe == Fp8Recipe::kDelayed;
  const bool pow2 = options_.pow2_scales;
  MF_CHECK(d_y_codes.dtype() == gf) << site.name << ": " << d_y_codes.DebugString();
  MF_CHECK(delayed || d_y_scale_inv.defined())
      << site.name << ": received FP8 gradient rows without their scales";
  // d_yᵀ needs new scales under current (one per tensor) and blockwise (128-token tiles): the
  // received values, dequantised in f32 once (code·scale, the same on every layout).
  Tensor d_y_values;
  if (!delayed && d_w != nullptr && d_y_codes.numel() > 0) {
    d_y_values = Temp(d_y_codes.shape(), DType::kF32, d_y_codes.device(), stream);
    MF_RETURN_IF_ERROR(ops::DequantizeBlockwise(
        d_y_codes, d_y_scale_inv,
        blockwise ? ops::kFp8ActivationTile : ops::Fp8BlockShape{1, d_y_codes.dim(1)},
        &d_y_values, stream));
  }
  Scale sx, sdyt;
  if (!blockwise && d_w != nullptr) {
    MF_ASSIGN_OR_RETURN(sx, TensorScale(x, false, site.fwd_base, ActivationComm(site), stream));
    if (delayed) {
      sdyt = Scale{grad_->scale(site.grad_slot), grad_->scale_inv(site.grad_slot)};
    } else if (d_y_values.defined()) {
      MF_ASSIGN_OR_RETURN(sdyt, TensorScale(d_y_values, true, site.grad_slot,
                                            ActivationComm(site), stream));
    }
  }
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const int64_t n = counts[e];
    const Tensor we = w.Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
    Scale sw;
    if (!blockwise && d_x != nullptr) {
      MF_ASSIGN_OR_RETURN(sw, TensorScale(we, false, WeightSlot(site, param, first_expert, e),
                                          WeightComm(site), stream));
    }
    if (n == 0) continue;
    const Tensor qdy = d_y_codes.Slice(row, row + n);
    if (d_x != nullptr) {
      Tensor out = d_x->Slice(row, row + n);
      if (blockwise) {
        const Tensor wt = PaddedTranspose(we, stream);
        MF_ASSIGN_OR_RETURN(Blocks bw, QuantizeBlocks(wt, ops::kFp8WeightBlock, DType::kFp8E4M3,
                                                      pow2, stream));
        MF_RETURN_IF_ERROR(ops::Fp8Gemm(qdy, d_y_scale_inv.Slice(row, row + n), bw.q,
                                        bw.scale_inv, {.block_k = kBlock}, dx_beta, &out, stream));
      } else {
        const Tensor qwt = Cast(we, sw.scale, DType::kFp8E4M3, true, stream);
        const Tensor sa = delayed ? grad_->scale_inv(site.grad_slot)
                                  : d_y_scale_inv.Slice(row, row + n);
        MF_RETURN_IF_ERROR(
            ops::Fp8Gemm(qdy, sa, qwt, sw.scale_inv, {}, dx_beta, &out, stream));
      }
    }
    if (d_w != nullptr) {
      Tensor dw = d_w->Slice(e, e + 1).Reshape({w.dim(1), w.dim(2)});
      const Tensor xt = PaddedTranspose(x.Slice(row, row + n), stream);
      if (blockwise) {
        const Tensor dyt = PaddedTranspose(d_y_values.Slice(row, row + n), stream);
        MF_ASSIGN_OR_RETURN(Blocks bxt, QuantizeBlocks(xt, ops::kFp8ActivationTile,
                                                       DType::kFp8E4M3, pow2, stream));
        MF_ASSIGN_OR_RETURN(Blocks bdyt,
                            QuantizeBlocks(dyt, ops::kFp8ActivationTile, gf, pow2, stream));
        MF_RETURN_IF_ERROR(ops::Fp8Gemm(bdyt.q, bdyt.scale_inv, bxt.q, bxt.scale_inv,
                                        {.block_k = kBlock}, 1.0f, &dw, stream));
      } else {
        const Tensor qxt = Cast(xt, sx.scale, DType::kFp8E4M3, false, stream);
        // Delayed: the transpose of fp8(d_y·s) is fp8(d_yᵀ·s), zero padding the zero code.
        const Tensor qdyt =
            delayed ? PaddedTranspose(qdy, stream)
                    : Cast(PaddedTranspose(d_y_values.Slice(row, row + n), stream), sdyt.scale, gf,
                           false, stream);
        MF_RETURN_IF_ERROR(ops::Fp8Gemm(qdyt, sdyt.scale_inv, qxt, sx.scale_inv, {}, 1.0f, &dw,
                                        stream));
      }
    }
    row += n;
  }
  return absl::OkStatus();
}

}  // namespace moefold::model
