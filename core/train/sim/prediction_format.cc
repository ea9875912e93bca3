// Text and JSON forms of a Prediction.
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/train/sim/predict.h"

namespace moefold::sim {
namespace {

std::string Ms(double s) { return absl::StrFormat("%.2f", s * 1e3); }
std::string Where(bool inter) { return inter ? "inter-node" : "intra-node"; }
std::string Bytes(double b) {
  if (b >= 1 << 30) return absl::StrFormat("%.2f GiB", b / (1 << 30));
  if (b >= 1 << 20) return absl::StrFormat("%.1f MiB", b / (1 << 20));
  return absl::StrFormat("%.1f KiB", b / 1024);
}

// Forward and backward seconds by family, in a stable order.
std::map<std::string, std::pair<double, double>> ByFamily(const LayerCost& layer) {
  std::map<std::string, std::pair<double, double>> out;
  for (const OpTime& op : layer.ops) {
    out[op.family].first += op.fwd;
    out[op.family].second += op.bwd;
  }
  return out;
}

JsonLine CommJson(const CommTime& c) {
  JsonLine j;
  j.Add("name", c.name)
      .Add("group", c.group)
      .Add("collective", CollectiveName(c.kind))
      .Add("where", Where(c.inter_node))
      .Add("count", c.count)
      .Add("bytes", c.bytes)
      .Add("seconds", c.seconds)
      .Add("exposed_seconds", c.exposed);
  return j;
}

}  // namespace

std::string FormatPredictionSummary(const Prediction& p) {
  return absl::StrFormat("%-52s %9.4g s %10.0f tok/s %6.1f TFLOP/s %5.1f%% MFU  %6.1f GiB%s",
                         p.layout, p.step_seconds, p.tokens_per_s, p.model_tflops_per_gpu,
                         100 * p.mfu, p.memory.total_bytes / 1073741824.0, p.fits ? "" : " (over)");
}

std::string FormatPrediction(const Prediction& p) {
  const SimContext& c = p.ctx;
  std::string out = absl::StrFormat(
      "prediction on %s: %d GPUs on %d nodes\n"
      "  layout       %s\n"
      "  schedule     %s, %d micro-batches of %d × %d tokens per pipeline; routing %s (expert "
      "load %.2f), %d dispatch chunk(s); activations %s%s; gradients %s\n"
      "  step         %.3f s   %.0f tokens/s   %.1f model TFLOP/s per GPU   MFU %.1f%% of %.1f "
      "(bf16; %.3g FLOPs per token, recomputation not counted)\n"
      "  step time    pipeline %.3f s (slowest stage %s ms per micro-batch × %d) + bubble %.3f s "
      "+ gradient reduction exposed %.3f s (of %.3f s) + optimizer %.3f s + data %.4f s\n",
      p.cluster, p.world, p.nodes, p.layout, p.schedule, c.num_micro, c.micro, c.seq, c.routing,
      c.expert_load, c.dispatch_chunks, c.activation_policy,
      c.activation_policy == "swap" ? absl::StrFormat(" (fraction %.2f)", c.swap_fraction) : "",
      c.compression == "none" ? "uncompressed" : c.compression, p.step_seconds, p.tokens_per_s,
      p.model_tflops_per_gpu, 100 * p.mfu, p.mfu > 0 ? p.model_tflops_per_gpu / p.mfu : 0,
      p.flops_per_token, p.pipeline_seconds,
      Ms(p.pipeline_seconds / std::max(1, c.num_micro)), c.num_micro, p.bubble_seconds,
      p.dp_exposed_seconds, p.dp_seconds, p.optimizer_seconds, p.data_seconds);
  absl::StrAppend(&out, "  stages (one micro-batch, ms): stage layers forward backward exposed-comm\n");
  for (const StageTime& s : p.stages) {
    absl::StrAppendFormat(&out, "    %5d %6d %8s %8s %8s\n", s.stage, s.layers, Ms(s.forward),
                          Ms(s.backward), Ms(s.exposed_comm));
  }
  absl::StrAppend(&out, "  compute per layer and micro-batch (ms, forward / backward):\n");
  for (const LayerCost& layer : p.layer_kinds) {
    absl::StrAppendFormat(&out, "    %-9s", layer.kind);
    for (const auto& [family, t] : ByFamily(layer)) {
      absl::StrAppendFormat(&out, "  %s %s/%s", family, Ms(t.first), Ms(t.second));
    }
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppend(&out, "  communication per layer and micro-batch (all calls; ms):\n");
  for (const LayerCost& layer : p.layer_kinds) {
    for (const CommTime& cm : layer.comms) {
      absl::StrAppendFormat(&out, "    %-9s %-5s %-14s %-30s %-10s %2d × %-10s %8s exposed %8s\n",
                            layer.kind, cm.group, CollectiveName(cm.kind), cm.name,
                            Where(cm.inter_node), cm.count, Bytes(cm.bytes), Ms(cm.seconds),
                            Ms(cm.exposed));
    }
  }
  absl::StrAppend(&out, "  communication per step (slowest stage; ms):\n");
  for (const CommTime& cm : p.step_comms) {
    absl::StrAppendFormat(&out, "    %-5s %-14s %-34s %-10s %4d × %-10s %8s exposed %8s\n",
                          cm.group, CollectiveName(cm.kind), cm.name, Where(cm.inter_node),
                          cm.count, Bytes(cm.bytes), Ms(cm.seconds), Ms(cm.exposed));
  }
  absl::StrAppend(&out, train::FormatMemoryEstimate(p.memory));
  absl::StrAppendFormat(&out, "  fits in %.0f GiB: %s\n", p.memory_capacity_bytes / 1073741824.0,
                        p.fits ? "yes" : "NO");
  return out;
}

JsonLine PredictionJson(const Prediction& p) {
  JsonLine j;
  j.Add("cluster", p.cluster)
      .Add("world", p.world)
      .Add("nodes", p.nodes)
      .Add("layout", p.layout)
      .Add("schedule", p.schedule)
      .Add("micro_batches", p.ctx.num_micro)
      .Add("routing", p.ctx.routing)
      .Add("step_seconds", p.step_seconds)
      .Add("tokens_per_s", p.tokens_per_s)
      .Add("flops_per_token", p.flops_per_token)
      .Add("model_tflops_per_gpu", p.model_tflops_per_gpu)
      .Add("mfu", p.mfu)
      .Add("pipeline_seconds", p.pipeline_seconds)
      .Add("bubble_seconds", p.bubble_seconds)
      .Add("dp_seconds", p.dp_seconds)
      .Add("dp_exposed_seconds", p.dp_exposed_seconds)
      .Add("optimizer_seconds", p.optimizer_seconds)
      .Add("data_seconds", p.data_seconds);
  std::vector<JsonLine> stages, layers, step_comms;
  for (const StageTime& s : p.stages) {
    JsonLine sj;
    sj.Add("stage", s.stage)
        .Add("layers", s.layers)
        .Add("forward_seconds", s.forward)
        .Add("backward_seconds", s.backward)
        .Add("exposed_comm_seconds", s.exposed_comm);
    stages.push_back(sj);
  }
  for (const LayerCost& layer : p.layer_kinds) {
    JsonLine lj;
    lj.Add("kind", layer.kind);
    std::vector<JsonLine> families, comms;
    for (const auto& [family, t] : ByFamily(layer)) {
      JsonLine fj;
      fj.Add("family", family).Add("forward_seconds", t.first).Add("backward_seconds", t.second);
      families.push_back(fj);
    }
    for (const CommTime& cm : layer.comms) comms.push_back(CommJson(cm));
    lj.Add("compute", families).Add("communication", comms).Add("flops", layer.Flops());
    layers.push_back(lj);
  }
  for (const CommTime& cm : p.step_comms) step_comms.push_back(CommJson(cm));
  j.Add("stages", stages).Add("layers", layers).Add("step_communication", step_comms);
  j.Add("memory", train::MemoryEstimateJson(p.memory))
      .Add("memory_capacity_bytes", p.memory_capacity_bytes)
      .Add("fits", p.fits);
  return j;
}

}  // namespace moefold::sim
