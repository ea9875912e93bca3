// Assembles the step from the per-layer costs (docs/SIMULATOR.md §4): pipeline stages, the
// schedule's bubble, the gradient reductions after the last backward, the optimizer and the data.
#include "core/train/sim/predict.h"

#include <algorithm>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "configs/validate.h"
#include "core/status.h"
#include "core/train/flops.h"
#include "parallel/mapping.h"

namespace moefold::sim {
namespace {

// The gradient reduction of `elements` over a group: reduce-scatter (ZeRO-1) or all-reduce; EF21
// sends compressed pieces through an all-to-all (a compressed reduce-scatter) or, for Top-K, an
// all-gather of every rank's message.
std::vector<CommTime> GradReduction(const SimContext& ctx, const Cluster& cluster,
                                    const std::string& what, const std::string& group,
                                    const GroupSpan& span, double elements) {
  std::vector<CommTime> out;
  if (span.size <= 1 || elements <= 0) return out;
  if (ctx.compression == "ef21:topk") {
    out.push_back(Comm(cluster, what + " gradients (EF21 top-k)", group,
                           Collective::kAllGather, span,
                           span.size * elements * ctx.grad_bytes_per_element));
  } else if (ctx.compression != "none") {
    out.push_back(Comm(cluster, what + " gradients (EF21)", group, Collective::kAllToAll,
                           span, elements * ctx.grad_bytes_per_element));
    if (!ctx.zero1) {
      out.push_back(Comm(cluster, what + " gradient sums", group, Collective::kAllGather,
                             span, elements * 4));
    }
  } else {
    out.push_back(Comm(cluster, what + " gradients", group,
                           ctx.zero1 ? Collective::kReduceScatter : Collective::kAllReduce, span,
                           elements * ctx.grad_bytes_per_element));
  }
  return out;
}

}  // namespace

void StageParameters(const SimContext& ctx, const std::vector<int>& stage_layers, int stage,
                     double* dense, double* expert) {
  const model::ModelSpec& m = ctx.spec;
  const double h = m.hidden, d = m.head_dim, tp = ctx.tp;
  const double shared = m.moe.num_shared_experts *
                        static_cast<double>(m.moe.shared_ffn > 0 ? m.moe.shared_ffn : m.moe.expert_ffn);
  const double vocab_shard = (m.vocab + ctx.tp - 1) / ctx.tp;
  const int stages = ctx.pp * ctx.vpp;
  *dense = *expert = 0;
  for (int c = 0; c < ctx.vpp; ++c) {
    const int v = c * ctx.pp + stage;
    int first = 0;
    for (int i = 0; i < v; ++i) first += stage_layers[i];
    if (v == 0) *dense += vocab_shard * h;
    if (v == stages - 1) {
      if (!(v == 0 && m.tie_embeddings)) *dense += vocab_shard * h;
      *dense += h;  // final norm
    }
    for (int l = first; l < first + stage_layers[v]; ++l) {
      *dense += h * d * (2.0 * m.num_heads + 2.0 * m.num_kv_heads) / tp + 2 * h;
      if (m.moe_layer[l]) {
        *dense += m.moe.num_experts * h + 3 * h * shared / tp;
        *expert += static_cast<double>(m.moe.num_experts / ctx.ep) * 3 * h * m.moe.expert_ffn /
                   ctx.etp;
      } else {
        *dense += 3 * h * m.ffn / tp;
      }
    }
  }
}

absl::StatusOr<Prediction> Predict(const config::ExperimentConfig& config, int world,
                                   const Cluster& cluster, const PredictOptions& options) {
  MF_RETURN_IF_ERROR(config::Validate(config, world));
  const auto& par = config.parallel();
  parallel::ParallelSizes sizes{.tp = par.tp(), .cp = par.cp(), .dp = par.dp(), .pp = par.pp(),
                                .etp = par.etp(), .ep = par.ep(), .order = par.order()};
  MF_ASSIGN_OR_RETURN(const parallel::Mapping mapping, parallel::Mapping::Create(world, sizes));
  Prediction p;
  MF_ASSIGN_OR_RETURN(p.ctx, MakeContext(config, mapping, cluster, options));
  const SimContext& ctx = p.ctx;
  p.cluster = cluster.name;
  p.world = world;
  p.nodes = (world + cluster.gpus_per_node - 1) / cluster.gpus_per_node;
  p.layout = absl::StrFormat("tp%d cp%d dp%d pp%d vpp%d | ep%d etp%d edp%d | mbs%d%s", ctx.tp,
                             ctx.cp, ctx.dp, ctx.pp, ctx.vpp, ctx.ep, ctx.etp, ctx.edp, ctx.micro,
                             ctx.sequence_parallel && ctx.tp > 1 ? " sp" : "");
  p.schedule = par.schedule() == "auto" ? (ctx.vpp > 1 ? "interleaved" : "1f1b") : par.schedule();

  const LayerCost dense = CostLayer(ctx, cluster, false), moe = CostLayer(ctx, cluster, true);
  const LayerCost embedding = CostEmbedding(ctx, cluster), head = CostHead(ctx, cluster);
  const bool any_dense = std::count(ctx.spec.moe_layer.begin(), ctx.spec.moe_layer.end(), false);
  const bool any_moe = std::count(ctx.spec.moe_layer.begin(), ctx.spec.moe_layer.end(), true);
  if (any_dense) p.layer_kinds.push_back(dense);
  if (any_moe) p.layer_kinds.push_back(moe);
  p.layer_kinds.push_back(embedding);
  p.layer_kinds.push_back(head);

  // Pipeline transfers: each chunk boundary sends the activation forward and its gradient back.
  const double boundary_bytes = static_cast<double>(ctx.micro) * ctx.seq / ctx.cp *
                                ctx.spec.hidden * 2 / (ctx.sequence_parallel ? ctx.tp : 1);
  const double transfer =
      ctx.pp > 1 ? CollectiveSeconds(cluster, Collective::kSendRecv, boundary_bytes, ctx.pp_span).seconds
                 : 0;
  MF_ASSIGN_OR_RETURN(const std::vector<int> stage_layers, config::StageLayerCounts(config));
  const int stages = ctx.pp * ctx.vpp;
  for (int s = 0; s < ctx.pp; ++s) {
    StageTime st;
    st.stage = s;
    auto add = [&](const LayerCost& c) {
      st.forward += c.Forward();
      st.backward += c.Backward();
      st.exposed_comm += c.Exposed();
    };
    for (int c = 0; c < ctx.vpp; ++c) {
      const int v = c * ctx.pp + s;
      int first = 0;
      for (int i = 0; i < v; ++i) first += stage_layers[i];
      for (int l = first; l < first + stage_layers[v]; ++l) add(ctx.spec.moe_layer[l] ? moe : dense);
      st.layers += stage_layers[v];
      if (v == 0) add(embedding);
      if (v == stages - 1) add(head);
      // Sends after the forward (unless last) and the backward (unless first).
      st.exposed_comm += transfer * ((v < stages - 1) + (v > 0));
    }
    StageParameters(ctx, stage_layers, s, &st.dense_parameters, &st.expert_parameters);
    p.stages.push_back(st);
  }
  double slowest = 0;
  for (const StageTime& st : p.stages) slowest = std::max(slowest, st.Total());
  p.pipeline_seconds = ctx.num_micro * slowest;
  p.bubble_seconds = (ctx.pp - 1) * slowest / ctx.vpp;  // (pp − 1) chunk passes of the slowest

  // After its last backward a stage reduces its gradients (bucketed: they start while the last
  // micro-batch's backward runs), then ZeRO-1 gathers the updated parameters.
  double worst_exposed = 0, worst_total = 0, worst_optimizer = 0;
  std::vector<CommTime> worst_comms;
  for (const StageTime& st : p.stages) {
    std::vector<CommTime> comms =
        GradReduction(ctx, cluster, "dense", "dp-cp", ctx.dp_cp_span, st.dense_parameters);
    for (CommTime& c : GradReduction(ctx, cluster, "expert", "edp", ctx.edp_span,
                                     st.expert_parameters)) {
      comms.push_back(c);
    }
    double reduce = 0;
    for (const CommTime& c : comms) reduce += c.seconds;
    const double window = st.backward;  // the last micro-batch's backward through the stage
    const double reduce_exposed = std::max(0.0, reduce - window);
    for (CommTime& c : comms) c.exposed = reduce > 0 ? c.seconds * reduce_exposed / reduce : 0;
    double gather = 0;
    if (ctx.zero1) {
      for (const auto& [what, group, span, elements] :
           {std::tuple<const char*, const char*, GroupSpan, double>{
                "dense parameters (ZeRO-1)", "dp-cp", ctx.dp_cp_span, st.dense_parameters},
            {"expert parameters (ZeRO-1)", "edp", ctx.edp_span, st.expert_parameters}}) {
        if (span.size <= 1) continue;
        comms.push_back(Comm(cluster, what, group, Collective::kAllGather, span, elements * 2));
        gather += comms.back().seconds;
      }
    }
    // AdamW on this rank's shard: read the gradient, read and write master weights and both
    // moments (f32), write the bf16 copy; the gradient norm reads every gradient once more.
    const double shard = ctx.zero1 ? st.dense_parameters / std::max(1, ctx.dp * ctx.cp) +
                                         st.expert_parameters / std::max(1, ctx.edp)
                                   : st.dense_parameters + st.expert_parameters;
    const double optimizer = MemoryBoundSeconds(
        cluster, shard * 30 + (st.dense_parameters + st.expert_parameters) * 4);
    if (reduce_exposed + gather + optimizer > worst_exposed + worst_optimizer) {
      worst_exposed = reduce_exposed + gather;
      worst_total = reduce + gather;
      worst_optimizer = optimizer;
      worst_comms = comms;
    }
  }
  p.dp_seconds = worst_total;
  p.dp_exposed_seconds = worst_exposed;
  p.optimizer_seconds = worst_optimizer;
  p.step_comms = worst_comms;
  if (ctx.pp > 1) {
    CommTime pipe = Comm(cluster, "stage activations and gradients", "pp",
                             Collective::kSendRecv, ctx.pp_span, boundary_bytes);
    pipe.count = 2 * ctx.num_micro * ctx.vpp;
    pipe.seconds *= pipe.count;
    pipe.exposed = pipe.seconds;  // counted inside the stage times above
    p.step_comms.push_back(pipe);
  }
  // Token ids and labels (i32 each) to the device; prefetched, but counted as it is tiny.
  p.data_seconds = static_cast<double>(ctx.num_micro) * ctx.micro * ctx.seq * 8 /
                   (cluster.pcie_gbps * 1e9);
  p.step_seconds = p.pipeline_seconds + p.bubble_seconds + p.dp_exposed_seconds +
                   p.optimizer_seconds + p.data_seconds;
  const double tokens = static_cast<double>(config.train().global_batch_size()) * ctx.seq;
  p.tokens_per_s = tokens / p.step_seconds;
  p.flops_per_token = train::TrainingFlopsPerToken(ctx.spec, ctx.seq);
  p.model_tflops_per_gpu = p.flops_per_token * p.tokens_per_s / world / 1e12;
  p.mfu = p.model_tflops_per_gpu / cluster.bf16_tflops;

  // Memory: the first rank of each pipeline stage; report the stage that needs most.
  std::set<int> seen;
  for (int r = 0; r < world && static_cast<int>(seen.size()) < ctx.pp; ++r) {
    const int stage = mapping.attention_coords(r).pp;
    if (!seen.insert(stage).second) continue;
    MF_ASSIGN_OR_RETURN(train::MemoryEstimate m, train::EstimateMemory(config, mapping, r));
    if (m.total_bytes > p.memory.total_bytes) p.memory = m;
  }
  p.memory_capacity_bytes = cluster.hbm_gib * 1073741824.0;
  p.fits = p.memory.total_bytes <= p.memory_capacity_bytes;
  return p;
}

}  // namespace moefold::sim
