// Per-layer costs: shapes from the model and layout, times from cost_model.h. Formulas in
// docs/SIMULATOR.md §3; FLOPs agree with core/train/flops.h family by family.
#include "core/train/sim/layer_costs.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/train/fp8_exchange_bytes.h"
#include "core/train/memory_plan.h"
#include "configs/validate.h"
#include "core/train/model_from_config.h"

namespace moefold::sim {
namespace {

// The group of `kind` spanning the most nodes (every group of a kind has the same size).
GroupSpan WorstSpan(const parallel::Mapping& mapping, parallel::GroupKind kind, int gpus_per_node) {
  GroupSpan worst;
  for (const auto& group : mapping.Groups(kind)) {
    const GroupSpan span = SpanOf(group, gpus_per_node);
    if (span.nodes > worst.nodes || (span.nodes == worst.nodes && span.size > worst.size)) {
      worst = span;
    }
  }
  return worst;
}

double ElementBytes(const SimContext&) { return 2.0; }  // bf16 activations (f32 runs: see doc)

// Two GEMMs of a SwiGLU FFN on `rows` rows: (rows × h)·(h × 2f) and (rows × f)·(f × h).
double SwigluGemmSeconds(const Cluster& c, double rows, double h, double f, double peak) {
  return GemmSeconds(c, rows, 2 * f, h, peak) + GemmSeconds(c, rows, h, f, peak);
}

}  // namespace

CommTime Comm(const Cluster& cluster, std::string name, std::string group, Collective kind,
              const GroupSpan& span, double bytes, int count) {
  CommTime t;
  t.name = std::move(name);
  t.group = std::move(group);
  t.kind = kind;
  t.inter_node = span.inter_node();
  t.count = count;
  t.bytes = bytes;
  t.seconds = count * CollectiveSeconds(cluster, kind, bytes, span).seconds;
  t.exposed = t.seconds;
  return t;
}

namespace {

template <typename T>
double SumOf(const std::vector<T>& items, double T::*field) {
  double s = 0;
  for (const T& item : items) s += item.*field;
  return s;
}

}  // namespace

double LayerCost::Forward() const { return SumOf(ops, &OpTime::fwd); }
double LayerCost::Backward() const { return SumOf(ops, &OpTime::bwd); }
double LayerCost::Exposed() const { return SumOf(comms, &CommTime::exposed); }
double LayerCost::Flops() const { return SumOf(ops, &OpTime::flops); }

double RemoteNodesPerToken(int experts, int top_k, int nodes) {
  if (nodes <= 1) return 0;
  const int per_node = experts / nodes;
  // C(E − per_node, k) / C(E, k) = Π_{i<k} (E − per_node − i) / (E − i).
  double none_there = 1;
  for (int i = 0; i < top_k; ++i) {
    none_there *= std::max(0.0, static_cast<double>(experts - per_node - i)) / (experts - i);
  }
  return (nodes - 1) * (1 - none_there);
}

absl::StatusOr<SimContext> MakeContext(const config::ExperimentConfig& config,
                                       const parallel::Mapping& mapping, const Cluster& cluster,
                                       const PredictOptions& options) {
  SimContext ctx;
  if (options.dispatcher != "all_to_all" && options.dispatcher != "node_dedup") {
    return absl::InvalidArgumentError(absl::StrCat("dispatcher \"", options.dispatcher,
                                                   "\" is not one of: all_to_all, node_dedup"));
  }
  ctx.dispatcher = options.dispatcher;
  MF_ASSIGN_OR_RETURN(ctx.spec, train::ModelSpecFromConfig(config));
  const parallel::ParallelSizes& s = mapping.sizes();
  const auto& par = config.parallel();
  ctx.tp = s.tp;
  ctx.cp = s.cp;
  ctx.dp = s.dp;
  ctx.pp = s.pp;
  ctx.vpp = std::max(1, par.virtual_stages());
  ctx.ep = s.ep;
  ctx.etp = s.etp;
  ctx.edp = mapping.edp();
  ctx.sequence_parallel = par.sequence_parallel();
  ctx.micro = config.train().micro_batch_size();
  ctx.seq = config.train().seq_len();
  ctx.num_micro = static_cast<int>(
      std::max<int64_t>(1, config.train().global_batch_size() / (ctx.micro * std::max(1, s.dp))));
  ctx.fp8 = config.precision().fp8_recipe() != "none";
  // f32 compute: the GEMMs run as TF32 on tensor cores, half the bf16 rate.
  ctx.gemm_peak = ctx.fp8 ? cluster.fp8_tflops
                          : (config.precision().compute_dtype() == "bf16" ? cluster.bf16_tflops
                                                                          : cluster.bf16_tflops / 2);
  ctx.zero1 = par.zero1();
  ctx.sp_gather_bytes = train::Fp8GathersCodes(config) ? 1.0 : ElementBytes(ctx);
  ctx.fp8_dispatch_bytes = train::Fp8DispatchBytesPerValue(config);
  const auto& moe = config.model().moe();
  if (moe.force_balanced_routing()) {
    ctx.routing = "forced_balanced";
    ctx.expert_load = 1;
  } else if (moe.capacity_factor() > 0) {
    ctx.routing = "capacity";
    ctx.expert_load = moe.pad_to_capacity()
                          ? moe.capacity_factor()
                          : std::min<double>(moe.capacity_factor(), cluster.dropless_imbalance);
  } else {
    ctx.routing = "dropless";
    ctx.expert_load = cluster.dropless_imbalance;
  }
  const int local_experts = std::max(1, ctx.spec.moe.num_experts / std::max(1, s.ep));
  ctx.dispatch_chunks = moe.dispatch_chunks() > 0 ? moe.dispatch_chunks() : (s.ep > 1 ? 2 : 1);
  ctx.dispatch_chunks = std::min(ctx.dispatch_chunks, local_experts);
  ctx.activation_policy = config.memory().activation_policy();
  ctx.swap_fraction = config.memory().swap_fraction();
  {
    MF_ASSIGN_OR_RETURN(const train::MemoryEstimate memory, train::EstimateMemory(config, mapping, 0));
    MF_ASSIGN_OR_RETURN(const std::vector<int> stage_layers, config::StageLayerCounts(config));
    int layers = 0;
    for (int c = 0; c < ctx.vpp; ++c) layers += stage_layers[c * ctx.pp];
    ctx.activation_bytes_per_layer =
        static_cast<double>(memory.activation_bytes_per_micro) / std::max(1, layers);
  }
  const auto& comp = config.compression();
  if (comp.method() == "ef21") {
    ctx.compression = absl::StrCat("ef21:", comp.compressor());
    if (comp.compressor() == "int8" || comp.compressor() == "fp8") {
      ctx.grad_bytes_per_element = 1.0 + 4.0 / std::max(1, comp.block_size());  // + f32 scales
    } else if (comp.compressor() == "topk") {
      ctx.grad_bytes_per_element = comp.topk_fraction() * 8.0;  // value + index
    }
  }
  const int g = cluster.gpus_per_node;
  using parallel::GroupKind;
  ctx.tp_span = WorstSpan(mapping, GroupKind::kTp, g);
  ctx.cp_span = WorstSpan(mapping, GroupKind::kCp, g);
  ctx.ep_span = WorstSpan(mapping, GroupKind::kEp, g);
  ctx.etp_span = WorstSpan(mapping, GroupKind::kEtp, g);
  ctx.dp_cp_span = WorstSpan(mapping, GroupKind::kDpCp, g);
  ctx.edp_span = WorstSpan(mapping, GroupKind::kEdp, g);
  ctx.pp_span = WorstSpan(mapping, GroupKind::kPp, g);
  return ctx;
}

LayerCost CostLayer(const SimContext& ctx, const Cluster& cluster, bool moe_layer) {
  const model::ModelSpec& m = ctx.spec;
  const double h = m.hidden, hq = static_cast<double>(m.num_heads) * m.head_dim;
  const double hkv = static_cast<double>(m.num_kv_heads) * m.head_dim;
  const double tp = ctx.tp, e = ElementBytes(ctx), peak = ctx.gemm_peak;
  const double tokens = static_cast<double>(ctx.micro) * ctx.seq / ctx.cp;  // this rank's sequence
  const double routed = tokens / tp;  // tokens this rank routes (and holds under SP)
  const double sp_tokens = ctx.sequence_parallel ? routed : tokens;
  LayerCost cost;
  cost.kind = moe_layer ? "moe" : "dense";

  // Attention: projections (TP column/row split), fused causal attention, elementwise.
  OpTime proj{"gemm"};
  proj.fwd = GemmSeconds(cluster, tokens, (hq + 2 * hkv) / tp, h, peak) +
             GemmSeconds(cluster, tokens, h, hq / tp, peak);
  proj.bwd = 2 * proj.fwd;  // data and weight gradients: two GEMMs of the same sizes each
  proj.flops = 6 * tokens * (h * (hq + 2 * hkv) + hq * h) / tp;
  OpTime attn{"attention"};
  const double attn_fwd_flops = 2 * tokens * ctx.seq * hq / tp;  // causal: half of 4·T·S·h_q
  attn.fwd = AttentionSeconds(cluster, attn_fwd_flops, cluster.bf16_tflops);
  attn.bwd = 2.5 * attn.fwd;  // the backward recomputes the scores: 5 products against 2
  attn.flops = 3 * attn_fwd_flops;
  // Elementwise elements per layer; the MLP adds its activation (read 2f, write f) and, for MoE,
  // routing scores, the permutation there and back, and the ETP regrouping.
  // Two blocks (attention, MLP), each a norm (read + write h) and a residual add (2 reads + 1
  // write), held sequence-parallel under SP; RoPE reads and writes q and k.
  const double norm_elems = 2 * (2 * h) * sp_tokens;
  double act_elems = 0;
  double other_elems = 2 * (3 * h) * sp_tokens + 2 * (hq + hkv) / tp * tokens;
  double fp8_cast_elems = tokens * (h + hq / tp);  // GEMM inputs quantised under FP8

  OpTime mlp_gemm{"gemm"}, experts{"expert_gemm"}, router{"router"};
  double expert_fwd = 0;
  const double shared_ffn = m.moe.num_shared_experts *
                            static_cast<double>(m.moe.shared_ffn > 0 ? m.moe.shared_ffn
                                                                     : m.moe.expert_ffn);
  const bool tp_mlp = !moe_layer || shared_ffn > 0;  // an MLP split over TP (dense or shared)
  if (moe_layer) {
    const double E = m.moe.num_experts, k = m.moe.top_k, fe = m.moe.expert_ffn;
    const double local = E / ctx.ep;
    const double pairs = routed * k;                          // this rank's token-expert pairs
    const double rows = pairs * ctx.etp * ctx.expert_load;   // after the exchange and ETP gather
    router.fwd = GemmSeconds(cluster, routed, E, h, peak);
    router.bwd = 2 * router.fwd;
    router.flops = 6 * routed * h * E;
    experts.fwd = local * SwigluGemmSeconds(cluster, rows / local, h, fe / ctx.etp, peak);
    experts.bwd = 2 * experts.fwd;
    experts.flops = 18 * pairs * h * fe;
    expert_fwd = experts.fwd;
    if (shared_ffn > 0) {
      mlp_gemm.fwd = SwigluGemmSeconds(cluster, tokens, h, shared_ffn / tp, peak);
      mlp_gemm.bwd = 2 * mlp_gemm.fwd;
      mlp_gemm.flops = 18 * tokens * h * shared_ffn / tp;
      act_elems += 3 * shared_ffn / tp * tokens;
      fp8_cast_elems += tokens * (h + shared_ffn / tp);
    }
    act_elems += 3 * fe * pairs * ctx.expert_load;
    other_elems += 3 * E * routed + 2 * 2 * k * h * routed * ctx.expert_load +
                   (ctx.etp > 1 ? 2 * h * rows : 0);
    fp8_cast_elems += rows * (h + fe / ctx.etp);
  } else {
    const double f = m.ffn;
    mlp_gemm.fwd = SwigluGemmSeconds(cluster, tokens, h, f / tp, peak);
    mlp_gemm.bwd = 2 * mlp_gemm.fwd;
    mlp_gemm.flops = 18 * tokens * h * f / tp;
    act_elems += 3 * f / tp * tokens;
    fp8_cast_elems += tokens * (h + f / tp);
  }
  OpTime elementwise{"elementwise"};
  elementwise.fwd = MemoryBoundSeconds(cluster, e * (norm_elems + act_elems + other_elems) +
                                                    (ctx.fp8 ? 3 * fp8_cast_elems : 0));
  elementwise.bwd = 2 * elementwise.fwd;
  cost.ops = {proj, attn};
  if (moe_layer) cost.ops.push_back(router);
  if (mlp_gemm.fwd > 0) cost.ops.push_back(mlp_gemm);
  if (moe_layer) cost.ops.push_back(experts);
  cost.ops.push_back(elementwise);
  if (ctx.activation_policy == "recompute") {
    // Selective recomputation: the norms and the SwiGLU activations run again in the backward.
    OpTime recompute{"recompute"};
    recompute.bwd = MemoryBoundSeconds(cluster, e * (norm_elems + act_elems));
    cost.ops.push_back(recompute);
  }
  if (ctx.activation_policy == "swap" && ctx.swap_fraction > 0) {
    // The swapped share goes to the host during the forward and comes back during the backward,
    // each copy hidden under that pass's compute where it fits.
    const double copy = ctx.swap_fraction * ctx.activation_bytes_per_layer / (cluster.pcie_gbps * 1e9);
    OpTime swap{"swap"};
    swap.fwd = std::max(0.0, copy - cost.Forward());
    swap.bwd = std::max(0.0, copy - cost.Backward());
    cost.ops.push_back(swap);
  }

  // Tensor parallelism: gathers and reduce-scatters under SP, all-reduces without.
  const double full = tokens * h * e;
  if (ctx.tp > 1) {
    const int blocks = tp_mlp ? 2 : 1;
    if (ctx.sequence_parallel) {
      // The forward gathers each block's normalised input, the backward its output gradient.
      cost.comms.push_back(Comm(cluster, "block inputs (SP gather)", "tp", Collective::kAllGather,
                                ctx.tp_span, tokens * h * ctx.sp_gather_bytes, 2 * blocks));
      cost.comms.push_back(Comm(cluster, "block outputs (SP scatter)", "tp",
                                Collective::kReduceScatter, ctx.tp_span, full, 2 * blocks));
    } else {
      cost.comms.push_back(Comm(cluster, "block outputs", "tp", Collective::kAllReduce,
                                ctx.tp_span, full, 2 * blocks));
      if (moe_layer) {
        cost.comms.push_back(Comm(cluster, "routed tokens' outputs", "tp", Collective::kAllGather,
                                  ctx.tp_span, full, 2));
      }
    }
  }
  // Context parallelism: cp − 1 K/V steps forward, K/V and dK/dV backward, hidden under the
  // attention blocks they feed.
  if (ctx.cp > 1) {
    CommTime ring = Comm(cluster, "K/V ring", "cp", Collective::kSendRecv, ctx.cp_span,
                         tokens * 2 * hkv / tp * e, 3 * (ctx.cp - 1));
    const double hide = (attn.fwd + attn.bwd) * (ctx.cp - 1) / ctx.cp;
    ring.exposed = std::max(0.0, ring.seconds - hide) +
                   CollectiveSeconds(cluster, Collective::kSendRecv, ring.bytes, ctx.cp_span).seconds;
    ring.exposed = std::min(ring.exposed, ring.seconds);
    cost.comms.push_back(ring);
  }
  // Expert parallelism: dispatch and combine all-to-alls (forward and backward), the ETP gather
  // and reduce-scatter; with c expert chunks all but the first dispatch and last combine overlap
  // the other chunks' expert GEMMs.
  if (moe_layer && (ctx.ep > 1 || ctx.etp > 1)) {
    const double pair_bytes = routed * m.moe.top_k * ctx.expert_load * h * e;
    std::vector<CommTime> moe_comms;
    if (ctx.ep > 1 && ctx.dispatcher == "node_dedup" && ctx.ep_span.inter_node()) {
      // Across nodes once per destination node (network), then to the experts' GPUs (NVLink).
      const double remote = RemoteNodesPerToken(m.moe.num_experts, m.moe.top_k, ctx.ep_span.nodes);
      const double inter = routed * remote * ctx.expert_load * h * e;
      const double intra = pair_bytes * (ctx.ep - 1) / ctx.ep;
      const double chunk = inter / std::max(1.0, ctx.ep_span.nodes - 1.0);
      const double seconds =
          std::max(inter / (cluster.internode_gbps * 1e9 * cluster.all_to_all_inter.At(chunk)),
                   intra / (cluster.nvlink_gbps * 1e9 *
                            cluster.all_to_all_intra.At(pair_bytes / ctx.ep))) +
          cluster.internode_latency_us * 1e-6;
      for (const char* name : {"dispatch (node-deduplicated)", "combine (node-deduplicated)"}) {
        CommTime t;
        t.name = name;
        t.group = "ep";
        t.kind = Collective::kAllToAll;
        t.inter_node = true;
        t.count = 2;
        t.bytes = inter;
        t.seconds = t.exposed = 2 * seconds;
        moe_comms.push_back(t);
      }
    } else if (ctx.ep > 1 && ctx.fp8_dispatch_bytes > 0) {
      // Both exchanges towards the experts move FP8 codes: the forward's dispatch and the
      // combine's backward (the down projection's output gradient); the two towards home (the
      // combine, the dispatch's backward) move the activation dtype.
      const double codes = pair_bytes / e * ctx.fp8_dispatch_bytes;
      moe_comms.push_back(Comm(cluster, "dispatch (FP8 codes)", "ep", Collective::kAllToAll,
                               ctx.ep_span, codes, 1));
      moe_comms.push_back(Comm(cluster, "dispatch backward", "ep", Collective::kAllToAll,
                               ctx.ep_span, pair_bytes, 1));
      moe_comms.push_back(Comm(cluster, "combine", "ep", Collective::kAllToAll, ctx.ep_span,
                               pair_bytes, 1));
      moe_comms.push_back(Comm(cluster, "combine backward (FP8 codes)", "ep",
                               Collective::kAllToAll, ctx.ep_span, codes, 1));
    } else if (ctx.ep > 1) {
      moe_comms.push_back(Comm(cluster, "dispatch", "ep", Collective::kAllToAll, ctx.ep_span,
                               pair_bytes, 2));
      moe_comms.push_back(Comm(cluster, "combine", "ep", Collective::kAllToAll, ctx.ep_span,
                               pair_bytes, 2));
    }
    if (ctx.etp > 1 && ctx.fp8_dispatch_bytes > 0) {
      // The expert inputs and the experts' output gradient are both gathered as codes.
      moe_comms.push_back(Comm(cluster,
                               "expert inputs and output gradients (ETP gather of FP8 codes)",
                               "etp", Collective::kAllGather, ctx.etp_span,
                               pair_bytes / e * ctx.fp8_dispatch_bytes * ctx.etp, 2));
    } else if (ctx.etp > 1) {
      moe_comms.push_back(Comm(cluster, "expert inputs (ETP gather)", "etp",
                               Collective::kAllGather, ctx.etp_span, pair_bytes * ctx.etp, 2));
      moe_comms.push_back(Comm(cluster, "expert outputs (ETP scatter)", "etp",
                               Collective::kReduceScatter, ctx.etp_span, pair_bytes * ctx.etp, 2));
    }
    double total = 0;
    for (const CommTime& c : moe_comms) total += c.seconds;
    const double chunks = ctx.dispatch_chunks, gemms = 3 * expert_fwd;  // forward + backward
    const double exposed =
        total / chunks + std::max(0.0, (total - gemms) * (chunks - 1) / chunks);
    for (CommTime& c : moe_comms) {
      c.exposed = total > 0 ? c.seconds * exposed / total : 0;
      cost.comms.push_back(c);
    }
  }
  return cost;
}

LayerCost CostEmbedding(const SimContext& ctx, const Cluster& cluster) {
  const double h = ctx.spec.hidden, e = ElementBytes(ctx);
  const double tokens = static_cast<double>(ctx.micro) * ctx.seq / ctx.cp;
  LayerCost cost;
  cost.kind = "embedding";
  OpTime lookup{"elementwise"};
  lookup.fwd = MemoryBoundSeconds(cluster, 2 * tokens * h * e);
  lookup.bwd = 2 * lookup.fwd;  // scatter-add into the f32 gradient
  cost.ops.push_back(lookup);
  if (ctx.tp > 1) {  // vocabulary-parallel lookup: partial rows summed over TP
    cost.comms.push_back(Comm(cluster, "embedding rows", "tp",
                              ctx.sequence_parallel ? Collective::kReduceScatter
                                                    : Collective::kAllReduce,
                              ctx.tp_span, tokens * h * e, 1));
  }
  return cost;
}

LayerCost CostHead(const SimContext& ctx, const Cluster& cluster) {
  const double h = ctx.spec.hidden, v = ctx.spec.vocab, e = ElementBytes(ctx);
  const double tokens = static_cast<double>(ctx.micro) * ctx.seq / ctx.cp;
  LayerCost cost;
  cost.kind = "head";
  OpTime gemm{"gemm"};
  gemm.fwd = GemmSeconds(cluster, tokens, v / ctx.tp, h, ctx.gemm_peak);
  gemm.bwd = 2 * gemm.fwd;
  gemm.flops = 6 * tokens * h * v / ctx.tp;
  OpTime loss{"elementwise"};  // final norm, then f32 logits: softmax, loss and its gradient
  loss.fwd = MemoryBoundSeconds(cluster, 4 * tokens * h * e / ctx.tp + 3 * tokens * v / ctx.tp * 4);
  loss.bwd = loss.fwd;
  cost.ops = {gemm, loss};
  if (ctx.tp > 1 && ctx.sequence_parallel) {
    cost.comms.push_back(Comm(cluster, "head input (SP gather)", "tp", Collective::kAllGather,
                              ctx.tp_span, tokens * h * e, 2));
  }
  return cost;
}

}  // namespace moefold::sim
