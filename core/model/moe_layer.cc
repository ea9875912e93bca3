// MoE layer: router, aux/z losses over the TP×CP token population, permutation, grouped experts,
// unpermutation, shared experts.
#include "core/model/moe_layer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/model/fp8_dispatch.h"
#include "core/model/linear.h"
#include "core/model/recompute_rows.h"
#include "ops/activation.h"
#include "ops/elementwise.h"
#include "ops/gemm.h"
#include "ops/grouped_gemm.h"
#include "ops/moe.h"
#include "ops/router.h"
#include "parallel/tensor_parallel.h"

namespace moefold::model {
namespace {

// Calls f(unit, begin, end) for every aux unit that has rows among [first, first + rows): begin and
// end are offsets into those rows.
template <typename F>
void ForEachUnitSlice(int64_t first, int64_t rows, int64_t unit_rows, F f) {
  for (int64_t u = first / unit_rows; u * unit_rows < first + rows; ++u) {
    const int64_t begin = std::max(first, u * unit_rows) - first;
    const int64_t end = std::min(first + rows, (u + 1) * unit_rows) - first;
    if (begin < end) f(u, begin, end);
  }
}

bool IsFp8(DType dtype) { return dtype == DType::kFp8E4M3 || dtype == DType::kFp8E5M2; }

// Rows [begin, end) of the dispatched rows' scales (undefined when none travel).
Tensor ScalesOf(const parallel::DispatchRows& rows, int64_t begin, int64_t end) {
  return rows.scales.defined() ? rows.scales.Slice(begin, end) : Tensor();
}

}  // namespace

MoeLayer::MoeLayer(const ModelSpec& spec, const ModelParallel& mp, const std::string& prefix,
                   ParameterSet* params)
    : spec_(spec), mp_(mp), load_(spec.moe.num_experts, 0) {
  const int64_t e = spec.moe.num_experts, f = spec.moe.expert_ffn, h = spec.hidden;
  MF_CHECK(e % mp.ep_size() == 0 && f % mp.etp_size() == 0)
      << prefix << ": " << e << " experts over ep " << mp.ep_size() << ", FFN " << f
      << " over etp " << mp.etp_size() << " (Validate refuses this)";
  // This EP rank's experts; ETP splits each expert's FFN (never confused with attention TP).
  const ExpertSplit mine{.first = mp.ep_rank() * (e / mp.ep_size()), .count = e / mp.ep_size()};
  auto etp_split = [&](int dim) {
    return TpSplit{.dim = dim, .rank = mp.etp_rank(), .size = mp.etp_size()};
  };
  const float out_std = spec.init_std / std::sqrt(2.0f * spec.num_layers);
  // Replicated across TP, and every TP rank routes other tokens: its gradient sums over TP.
  router_ = params->Add(prefix + ".gate.weight", {e, h}, GradReduction::kDenseDataCpTp,
                        spec.init_std);
  // ETP splits F (dimension 2): an expert's slice is its gate rows, then its up rows.
  gate_up_ = params->Add(prefix + ".experts.gate_up_proj.weight", {e, 2, f, h},
                         GradReduction::kExpertData, spec.init_std, true, 0.0f, etp_split(2),
                         mine);
  down_ = params->Add(prefix + ".experts.down_proj.weight", {e, h, f}, GradReduction::kExpertData,
                      out_std, true, 0.0f, etp_split(2), mine);
  if (spec.moe.num_shared_experts > 0) {
    const int64_t shared_ffn =
        static_cast<int64_t>(spec.moe.num_shared_experts) *
        (spec.moe.shared_ffn > 0 ? spec.moe.shared_ffn : spec.moe.expert_ffn);
    shared_ = std::make_unique<SwiGluMlp>(spec, mp, prefix + ".shared_experts", shared_ffn, params);
  }
  if (spec.moe.expert_bias) bias_ = Tensor::Zeros({e}, DType::kF32);
  prefix_ = prefix;
}

Tensor MoeLayer::GateUpExperts(const Tensor& t) const {
  return t.Reshape({t.dim(0), 2 * t.dim(2), t.dim(3)});
}

absl::Status MoeLayer::Forward(const StepContext& ctx, const MicroBatch& batch, const Tensor& x,
                               Saved* saved, Tensor* y, ForwardStats* stats) {
  const MoeSpec& moe = spec_.moe;
  const int64_t h = spec_.hidden, e = moe.num_experts, k = moe.top_k, f = moe.expert_ffn;
  const int64_t rows = batch.batch() * batch.seq_len();  // B·S rows of this CP chunk
  saved->x = x;
  if (SplitsRows()) {
    if (rows % mp_.tp_size() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MoE layer: ", rows, " tokens per micro-batch do not split over tp ", mp_.tp_size()));
    }
    const int64_t share = rows / mp_.tp_size();
    saved->first_row = mp_.tp_rank() * share;
    saved->routed = x.Slice(saved->first_row, saved->first_row + share);
  } else {
    saved->first_row = mp_.sequence_parallel ? mp_.tp_rank() * x.dim(0) : 0;
    saved->routed = x;
  }
  const Tensor& routed = saved->routed;
  const int64_t t = routed.dim(0), n = t * k;

  // Router in f32 math on the rows as they are (docs/FORMULAS.md §2) against the f32 master weight.
  RoutingPlan& plan = saved->plan;
  saved->logits = ctx.F32({t, e});
  plan.ids = ctx.I32({t, k});
  plan.weights = ctx.F32({t, k});
  {
    auto timed = ctx.Profile(OpFamily::kRouter);
    ops::RouterLogitsForward(routed, router_->value, &saved->logits, ctx.s());
    if (moe.force_balanced_routing) {
      // Rows are numbered from this rank's first routed row, so a TP rank's share continues where
      // the previous one stopped and each rank's own tokens are balanced across the experts.
      ops::BalancedRouting(saved->first_row, static_cast<int>(e), &plan.ids, &plan.weights,
                           ctx.s());
    } else {
      const Tensor bias = bias_.defined() && bias_.numel() > 0 ? ctx.Upload(bias_) : Tensor();
      ops::RouterTopKForward(saved->logits, bias, moe.topk, &plan.ids, &plan.weights, ctx.s());
    }
  }

  if (moe.aux_type != AuxLossType::kNone && moe.aux_coeff > 0) {
    auto timed = ctx.Profile(OpFamily::kRouter);
    saved->probs = ctx.F32({t, e});
    ops::SoftmaxForward(saved->logits, &saved->probs, ctx.s());
    // One aux unit per micro-batch (batch-level) or per sequence (sequence-level); its expert
    // counts are summed over TP×CP, the ranks that hold the unit's other tokens.
    const bool per_batch = moe.aux_type == AuxLossType::kBatch;
    const int64_t units = per_batch ? 1 : batch.batch();
    saved->unit_rows = per_batch ? rows : batch.seq_len();
    saved->unit_tokens = saved->unit_rows * mp_.cp_size();
    saved->unit_counts = ctx.F32({units, e});
    ops::CountExpertsPerUnit(plan.ids, saved->first_row, saved->unit_rows, &saved->unit_counts,
                             ctx.s());
    if (!parallel::IsSingleRank(mp_.tp_cp)) {
      MF_RETURN_IF_ERROR(parallel::WaitFor(mp_.tp_cp->AllReduce(&saved->unit_counts, {})));
    }
    Tensor aux_sum = ctx.DeviceSumSlot(kAuxLossSum);
    ForEachUnitSlice(saved->first_row, t, saved->unit_rows, [&](int64_t u, int64_t b, int64_t end) {
      ops::AuxLossForward(saved->probs.Slice(b, end),
                          saved->unit_counts.Slice(u, u + 1).Reshape({e}), saved->unit_tokens, k,
                          moe.aux_coeff, &aux_sum, ctx.s());
    });
    stats->aux_units += units;
  }
  if (moe.z_coeff > 0) {
    auto timed = ctx.Profile(OpFamily::kRouter);
    Tensor z_sum = ctx.DeviceSumSlot(kZLossSum);
    ops::ZLossForward(saved->logits, moe.z_coeff, /*total_tokens=*/1, &z_sum, ctx.s());
  }

  // The device sorts the pairs (a stable counting sort; capacity mode keeps each expert's chosen
  // ones); the forward's one device-to-host copy brings the per-expert counts (kept pairs, and in
  // capacity mode the pairs before drops), which the dispatch plan and the grouped GEMMs need.
  plan.sorted = ctx.I32({n});
  const int64_t count_slots = moe.capacity_factor > 0 ? 2 * e : e;
  Tensor device_counts = ctx.I32({count_slots});
  int64_t capacity = 0;
  {
    auto timed = ctx.Profile(OpFamily::kPermute);
    Tensor kept_counts = device_counts.Slice(0, e);
    if (moe.capacity_factor > 0) {
      capacity = ExpertCapacity(t, moe.top_k, moe.num_experts, moe.capacity_factor);
      Tensor demand = device_counts.Slice(e, 2 * e);
      ops::ComputeCapacityPermutation(plan.ids, plan.weights, moe.num_experts, capacity,
                                      moe.drop_policy, &plan.sorted, &kept_counts, &demand,
                                      ctx.s());
    } else {
      ops::ComputePermutation(plan.ids, moe.num_experts, &plan.sorted, &kept_counts, ctx.s());
    }
  }
  const Tensor host_counts = device_counts.To(Device::Cpu());
  plan.counts = host_counts.Slice(0, e);
  const int32_t* demand = host_counts.data<int32_t>() + (moe.capacity_factor > 0 ? e : 0);
  std::vector<int64_t> counts(e);
  int64_t kept = 0;
  for (int64_t i = 0; i < e; ++i) {
    counts[i] = plan.counts.data<int32_t>()[i];
    kept += counts[i];
    load_[i] += demand[i];
  }
  dropped_ += n - kept;
  plan.sorted = plan.sorted.Slice(0, kept);  // capacity mode: the kept pairs come first
  parallel::DispatchOptions options{
      .pad_to = moe.pad_to_capacity ? capacity : 0, .chunks = DispatchChunks(), .stream = &ctx.s()};
  MF_ASSIGN_OR_RETURN(saved->dispatch,
                      parallel::BuildDispatchPlan(counts, options, mp_.experts));
  // The permuted rows, or under the FP8 dispatch their codes and scales.
  parallel::DispatchRows permuted;
  {
    auto timed = ctx.Profile(OpFamily::kPermute);
    MF_ASSIGN_OR_RETURN(permuted, PermuteForDispatch(ctx, routed, plan.sorted));
  }

  // The local experts, one grouped GEMM per projection (gate and up fused) and chunk; under ETP
  // each output is a partial sum. The dispatcher exchanges one chunk while another computes.
  const int64_t local_rows = saved->dispatch.grouped_rows(), f_local = f / mp_.etp_size();
  saved->gate_up = ctx.Act({local_rows, 2 * f_local});
  saved->act = ctx.Act({local_rows, f_local});
  const Tensor gate_up_w = GateUpExperts(gate_up_->compute);
  const Tensor& down_w = down_->compute;
  parallel::DispatchRows dispatched;  // filled by the dispatcher while the experts run
  auto experts = [&](const parallel::DispatchChunk& chunk, const Tensor& grouped, Tensor* out,
                     const std::function<void()>& progress) {
    const int64_t begin = chunk.grouped_offset, end = begin + chunk.grouped_rows;
    const int lo = chunk.first_expert, hi = lo + chunk.experts;
    Tensor gate_up = saved->gate_up.Slice(begin, end), act = saved->act.Slice(begin, end);
    {
      auto timed = ctx.Profile(OpFamily::kExpertGemm);
      MF_RETURN_IF_ERROR(GateUpForward(ctx, lo, grouped, ScalesOf(dispatched, begin, end),
                                       gate_up_w.Slice(lo, hi), chunk.local_counts, &gate_up));
    }
    progress();
    {
      auto timed = ctx.Profile(OpFamily::kActivation);
      ops::SwiGluForward(gate_up, &act, ctx.s());
    }
    progress();
    auto timed = ctx.Profile(OpFamily::kExpertGemm);
    return GroupedLinear(ctx, *down_, lo, act, down_w.Slice(lo, hi), chunk.local_counts, out);
  };
  {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(parallel::DispatchAndCombine(saved->dispatch, mp_.experts, permuted,
                                                    routed.dtype(), experts, &dispatched,
                                                    &saved->combined, ctx.s(), &dispatch_bytes_));
  }
  saved->grouped = dispatched.rows;
  saved->grouped_scale_inv = dispatched.scales;
  Tensor routed_y = ctx.Act({t, h});
  {
    auto timed = ctx.Profile(OpFamily::kPermute);
    ops::UnpermuteTokens(saved->combined, plan.sorted, plan.weights, &routed_y, ctx.s());
  }
  if (SplitsRows()) {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(parallel::TpGather(routed_y, mp_.tp, /*sequence_parallel=*/true, y));
  } else {
    *y = routed_y;
  }

  // The shared experts add their output to the routed one (in their down projection's GEMM).
  if (shared_) MF_RETURN_IF_ERROR(shared_->Forward(ctx, x, &saved->shared, y, /*accumulate=*/true));
  return absl::OkStatus();
}

absl::Status MoeLayer::Backward(const StepContext& ctx, const Saved& saved, const Tensor& d_y,
                                const BackwardSeeds& seeds, Tensor* d_x) const {
  const MoeSpec& moe = spec_.moe;
  const RoutingPlan& plan = saved.plan;
  const int64_t t = saved.routed.dim(0), h = spec_.hidden, e = moe.num_experts, k = moe.top_k;
  const int64_t f = moe.expert_ffn;

  // Without SP the gradient of the layer output is replicated across TP: take this rank's rows.
  const Tensor d_routed_y = SplitsRows() ? d_y.Slice(saved.first_row, saved.first_row + t) : d_y;

  // Backward of Combine is Dispatch and backward of Dispatch is Combine (token_dispatcher.h): the
  // gradient takes the forward's exchanges in reverse, chunk by chunk, pipelined the same way.
  const int64_t kept = plan.sorted.numel();
  const int64_t f_local = f / mp_.etp_size();
  Tensor d_combined = ctx.Act({kept, h});
  Tensor d_weights = ctx.F32({t, k});
  {
    auto timed = ctx.Profile(OpFamily::kPermute);
    ops::UnpermuteTokensBackward(d_routed_y, saved.combined, plan.sorted, plan.weights,
                                 &d_combined, &d_weights, ctx.s());
  }
  const Tensor gate_up_w = GateUpExperts(gate_up_->compute);
  const Tensor d_gate_up_w = GateUpExperts(gate_up_->grad);
  // Where the forward dispatched FP8 rows, the combine's backward (a dispatch) sends the down
  // projection's output gradient as codes in the gradient format too (core/model/fp8_dispatch.h).
  const bool fp8_gradient = IsFp8(saved.grouped.dtype());
  parallel::DispatchRows d_dispatched;  // its scales, filled by the dispatcher while experts run
  auto experts = [&](const parallel::DispatchChunk& chunk, const Tensor& d_expert_out,
                     Tensor* d_grouped, const std::function<void()>& progress) {
    const int64_t begin = chunk.grouped_offset, end = begin + chunk.grouped_rows;
    const int lo = chunk.first_expert, hi = lo + chunk.experts;
    const Tensor& counts = chunk.local_counts;
    Tensor d_act = ctx.Act({chunk.grouped_rows, f_local});
    {
      auto timed = ctx.Profile(OpFamily::kExpertGemm);
      Tensor d_down = down_->grad.Slice(lo, hi);
      if (fp8_gradient) {
        MF_RETURN_IF_ERROR(GroupedLinearGradFromFp8(
            ctx, *down_, lo, saved.act.Slice(begin, end), down_->compute.Slice(lo, hi), counts,
            {d_expert_out, ScalesOf(d_dispatched, begin, end)}, &d_act, &d_down));
      } else {
        MF_RETURN_IF_ERROR(GroupedLinearGrad(ctx, *down_, lo, saved.act.Slice(begin, end),
                                             down_->compute.Slice(lo, hi), counts, d_expert_out,
                                             &d_act, &d_down));
      }
    }
    progress();
    Tensor d_gate_up = ctx.Act({chunk.grouped_rows, 2 * f_local});
    {
      auto timed = ctx.Profile(OpFamily::kActivation);
      ops::SwiGluBackward(saved.gate_up.Slice(begin, end), d_act, &d_gate_up, ctx.s());
    }
    progress();
    auto timed = ctx.Profile(OpFamily::kExpertGemm);
    Tensor d_w = d_gate_up_w.Slice(lo, hi);
    const Tensor x = saved.grouped.Slice(begin, end);
    if (IsFp8(x.dtype())) {
      return GroupedLinearGradFp8(ctx, *gate_up_, lo,
                                  {x, ScalesOf({saved.grouped, saved.grouped_scale_inv}, begin,
                                               end)},
                                  gate_up_w.Slice(lo, hi), counts, d_gate_up, d_grouped, &d_w);
    }
    return GroupedLinearGrad(ctx, *gate_up_, lo, x, gate_up_w.Slice(lo, hi), counts, d_gate_up,
                             d_grouped, &d_w);
  };
  Tensor d_expert_out, d_permuted;
  if (fp8_gradient) {
    parallel::DispatchRows d_rows;
    {
      auto timed = ctx.Profile(OpFamily::kPermute);
      MF_ASSIGN_OR_RETURN(d_rows, QuantizeCombineGradient(ctx, *down_, d_combined));
    }
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(parallel::DispatchAndCombine(saved.dispatch, mp_.experts, d_rows,
                                                    d_combined.dtype(), experts, &d_dispatched,
                                                    &d_permuted, ctx.s(), &dispatch_bytes_));
  } else {
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(parallel::DispatchAndCombine(saved.dispatch, mp_.experts, d_combined,
                                                    experts, &d_expert_out, &d_permuted, ctx.s(),
                                                    &dispatch_bytes_));
  }
  Tensor d_routed = ctx.Act({t, h});
  {
    auto timed = ctx.Profile(OpFamily::kPermute);
    ops::PermuteTokensBackward(d_permuted, plan.sorted, moe.top_k, &d_routed, ctx.s());
  }

  {
    // Router: gradients of the routing weights, the aux loss and the z-loss meet in d_logits
    // (f32); the router's input gradient accumulates into d_routed.
    auto timed = ctx.Profile(OpFamily::kRouter);
    Tensor d_logits = ctx.Zeros({t, e}, DType::kF32);
    if (!moe.force_balanced_routing) {  // forced weights are constants
      ops::RouterTopKBackward(saved.logits, plan.ids, plan.weights, moe.topk, d_weights,
                              &d_logits, ctx.s());
    }
    if (saved.probs.defined() && saved.probs.numel() > 0 && seeds.aux_grad_scale != 0.0f) {
      ForEachUnitSlice(saved.first_row, t, saved.unit_rows,
                       [&](int64_t u, int64_t b, int64_t end) {
                         Tensor d_logits_unit = d_logits.Slice(b, end);
                         ops::AuxLossBackward(saved.probs.Slice(b, end),
                                              saved.unit_counts.Slice(u, u + 1).Reshape({e}),
                                              saved.unit_tokens, k, moe.aux_coeff,
                                              seeds.aux_grad_scale, &d_logits_unit, ctx.s());
                       });
    }
    if (moe.z_coeff > 0 && seeds.z_grad_scale != 0.0f) {
      ops::ZLossBackward(saved.logits, moe.z_coeff, /*total_tokens=*/1, seeds.z_grad_scale,
                         &d_logits, ctx.s());
    }
    ops::RouterLogitsBackward(saved.routed, router_->value, d_logits, &d_routed, &router_->grad,
                              ctx.s());
  }
  if (SplitsRows()) {
    // Every TP rank needs the whole (replicated) input gradient: gather the shares.
    auto timed = ctx.Profile(OpFamily::kCommunication);
    MF_RETURN_IF_ERROR(parallel::TpGather(d_routed, mp_.tp, /*sequence_parallel=*/true, d_x));
  } else {
    *d_x = d_routed;
  }
  // The shared experts' input gradient adds into the routed one (in their GEMM).
  if (shared_) {
    MF_RETURN_IF_ERROR(shared_->Backward(ctx, saved.shared, d_y, d_x, /*accumulate=*/true));
  }
  return absl::OkStatus();
}

void MoeLayer::Saved::AppendRefs(bool local_experts, std::vector<SavedRef>* refs) {
  refs->push_back({SavedKind::kNormOutput, &x});
  refs->push_back({SavedKind::kNormOutput, &routed});
  // Recomputed whole (Recompute): the router's tensors, and rows in expert order.
  constexpr bool kWhole = false;
  refs->push_back({SavedKind::kRouter, &logits, true, kWhole});
  refs->push_back({SavedKind::kRouter, &probs, true, kWhole});
  refs->push_back({SavedKind::kMoeDispatched, &grouped, local_experts, kWhole});
  // Listed whether or not it is defined: the store matches a layer's refs by position.
  refs->push_back({SavedKind::kMoeDispatched, &grouped_scale_inv, local_experts, kWhole});
  refs->push_back({SavedKind::kSwiGluInput, &gate_up, true, kWhole});
  refs->push_back({SavedKind::kSwiGluOutput, &act, true, kWhole});
  refs->push_back({SavedKind::kMoeCombined, &combined, local_experts, kWhole});
  shared.AppendRefs(refs);
}

absl::Status MoeLayer::Recompute(const StepContext& ctx, const Tensor& x, Saved* saved) const {
  const MoeSpec& moe = spec_.moe;
  const RoutingPlan& plan = saved->plan;
  const int64_t t = plan.ids.dim(0), h = spec_.hidden, e = moe.num_experts;
  if (!saved->x.defined()) saved->x = x;
  if (!saved->routed.defined()) {
    saved->routed = SplitsRows() ? x.Slice(saved->first_row, saved->first_row + t) : x;
  }
  // The router's, the dispatched rows' and the experts' tensors are recomputed whole (a partly
  // placed one is overwritten with the same bits): the grouped rows are in expert order, not token
  // order, and the router keeps the split simple where its tensors are small.
  if (!IsComplete(ctx, saved->logits)) {
    Tensor logits = RecomputeRowsOf(ctx, &saved->logits, {t, e}, DType::kF32, 0);
    auto timed = ctx.Profile(OpFamily::kRouter);
    ops::RouterLogitsForward(saved->routed, router_->value, &logits, ctx.s());
  }
  if (!IsComplete(ctx, saved->probs) && moe.aux_type != AuxLossType::kNone && moe.aux_coeff > 0) {
    Tensor probs = RecomputeRowsOf(ctx, &saved->probs, {t, e}, DType::kF32, 0);
    auto timed = ctx.Profile(OpFamily::kRouter);
    ops::SoftmaxForward(saved->logits, &probs, ctx.s());
  }
  const parallel::DispatchPlan& dispatch = saved->dispatch;
  if (!IsComplete(ctx, saved->grouped)) {
    // Only local experts get here, and they never dispatch FP8 rows (PermuteForDispatch).
    MF_CHECK(LocalExperts()) << "the dispatched rows are kept under expert parallelism";
    parallel::DispatchRows permuted, grouped;
    {
      auto timed = ctx.Profile(OpFamily::kPermute);
      MF_ASSIGN_OR_RETURN(permuted, PermuteForDispatch(ctx, saved->routed, plan.sorted));
    }
    MF_RETURN_IF_ERROR(parallel::Dispatch(dispatch, mp_.experts, permuted, &grouped, ctx.s()));
    saved->grouped = grouped.rows;
    saved->grouped_scale_inv = grouped.scales;
  }
  const int64_t rows = dispatch.grouped_rows(), f_local = moe.expert_ffn / mp_.etp_size();
  const bool gate_up = !IsComplete(ctx, saved->gate_up), act = !IsComplete(ctx, saved->act);
  if (gate_up) RecomputeRowsOf(ctx, &saved->gate_up, {rows, 2 * f_local}, ctx.act_dtype, 0);
  if (act) RecomputeRowsOf(ctx, &saved->act, {rows, f_local}, ctx.act_dtype, 0);
  Tensor expert_out;
  const bool combined = !IsComplete(ctx, saved->combined);
  if (combined) {
    MF_CHECK(LocalExperts()) << "the combined rows are kept under expert parallelism";
    expert_out = ctx.Act({rows, h});
  }
  const Tensor gate_up_w = GateUpExperts(gate_up_->compute);
  for (const parallel::DispatchChunk& chunk : dispatch.chunks) {
    const int64_t begin = chunk.grouped_offset, end = begin + chunk.grouped_rows;
    const int lo = chunk.first_expert, hi = lo + chunk.experts;
    Tensor chunk_gate_up = saved->gate_up.Slice(begin, end), chunk_act = saved->act.Slice(begin, end);
    if (gate_up) {
      auto timed = ctx.Profile(OpFamily::kExpertGemm);
      MF_RETURN_IF_ERROR(GateUpForward(
          ctx, lo, saved->grouped.Slice(begin, end),
          ScalesOf({saved->grouped, saved->grouped_scale_inv}, begin, end),
          gate_up_w.Slice(lo, hi), chunk.local_counts, &chunk_gate_up));
    }
    if (act) {
      auto timed = ctx.Profile(OpFamily::kActivation);
      ops::SwiGluForward(chunk_gate_up, &chunk_act, ctx.s());
    }
    if (combined) {
      Tensor out = expert_out.Slice(begin, end);
      auto timed = ctx.Profile(OpFamily::kExpertGemm);
      MF_RETURN_IF_ERROR(GroupedLinear(ctx, *down_, lo, chunk_act, down_->compute.Slice(lo, hi),
                                       chunk.local_counts, &out));
    }
  }
  if (combined) {
    MF_RETURN_IF_ERROR(parallel::Combine(dispatch, mp_.experts, expert_out, &saved->combined, ctx.s()));
  }
  if (shared_) MF_RETURN_IF_ERROR(shared_->Recompute(ctx, x, &saved->shared));
  return absl::OkStatus();
}

absl::StatusOr<parallel::DispatchRows> MoeLayer::PermuteForDispatch(const StepContext& ctx,
                                                                     const Tensor& routed,
                                                                     const Tensor& sorted) const {
  // FP8 rows only where they travel: with every expert on this rank the GEMM casts the rows
  // itself, and the weight gradient quantises the rows rather than their dequantised codes.
  if (UsesFp8Dispatch(ctx) && !LocalExperts()) {
    return QuantizeRoutedRows(ctx, *gate_up_, routed, sorted, spec_.moe.top_k);
  }
  parallel::DispatchRows rows{.rows = ctx.Act({sorted.numel(), spec_.hidden}),
                              .scales = Tensor()};
  ops::PermuteTokens(routed, sorted, spec_.moe.top_k, &rows.rows, ctx.s());
  return rows;
}

absl::Status MoeLayer::GateUpForward(const StepContext& ctx, int64_t first_expert,
                                     const Tensor& grouped, const Tensor& scale_inv,
                                     const Tensor& w, const Tensor& counts, Tensor* y) const {
  if (IsFp8(grouped.dtype())) {
    return GroupedLinearFp8(ctx, *gate_up_, first_expert, {grouped, scale_inv}, w, counts, y);
  }
  return GroupedLinear(ctx, *gate_up_, first_expert, grouped, w, counts, y);
}

void MoeLayer::ResetLoad() {
  std::fill(load_.begin(), load_.end(), 0);
  dropped_ = 0;
  dispatch_bytes_ = 0;
}

void MoeLayer::UpdateExpertBias(const std::vector<float>& global_load, float rate) {
  if (!bias_.defined() || bias_.numel() == 0) return;
  MF_CHECK_EQ(static_cast<int64_t>(global_load.size()), bias_.numel());
  double mean = 0;
  for (float c : global_load) mean += c;
  mean /= static_cast<double>(global_load.size());
  for (size_t i = 0; i < global_load.size(); ++i) {
    const double diff = mean - static_cast<double>(global_load[i]);
    bias_.data<float>()[i] += rate * static_cast<float>((diff > 0) - (diff < 0));
  }
}

void MoeLayer::set_expert_bias(const Tensor& bias) {
  MF_CHECK(bias_.defined() && bias_.numel() == bias.numel()) << "expert bias of the wrong size";
  bias_.CopyFrom(bias);
}

}  // namespace moefold::model
