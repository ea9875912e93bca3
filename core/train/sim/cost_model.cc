#include "core/train/sim/cost_model.h"

#include <algorithm>
#include <map>

namespace moefold::sim {

double GemmSeconds(const Cluster& c, double m, double n, double k, double peak_tflops) {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  const double fraction = c.gemm_efficiency.At(std::min({m, n, k}));
  return 2.0 * m * n * k / (peak_tflops * 1e12 * fraction);
}

double AttentionSeconds(const Cluster& c, double flops, double peak_tflops) {
  return flops <= 0 ? 0 : flops / (peak_tflops * 1e12 * c.attention_efficiency);
}

double MemoryBoundSeconds(const Cluster& c, double bytes) {
  return bytes <= 0 ? 0 : bytes / (c.hbm_gbps * 1e9 * c.memory_efficiency);
}

GroupSpan SpanOf(const std::vector<int>& ranks, int gpus_per_node) {
  GroupSpan span;
  span.size = static_cast<int>(ranks.size());
  std::map<int, int> per_node;
  for (int r : ranks) ++per_node[r / std::max(1, gpus_per_node)];
  span.nodes = std::max<int>(1, per_node.size());
  span.per_node = 1;
  for (const auto& [node, count] : per_node) span.per_node = std::max(span.per_node, count);
  return span;
}

absl::string_view CollectiveName(Collective kind) {
  switch (kind) {
    case Collective::kAllReduce: return "all_reduce";
    case Collective::kAllGather: return "all_gather";
    case Collective::kReduceScatter: return "reduce_scatter";
    case Collective::kAllToAll: return "all_to_all";
    case Collective::kSendRecv: return "send_recv";
  }
  return "?";
}

CollectiveCost CollectiveSeconds(const Cluster& c, Collective kind, double bytes,
                                 const GroupSpan& span) {
  CollectiveCost cost;
  const double n = span.size;
  if (bytes <= 0 || (n <= 1 && kind != Collective::kSendRecv)) return cost;
  const bool inter = span.inter_node();
  const double link_gbps = inter ? c.internode_gbps : c.nvlink_gbps;
  const double latency = (inter ? c.internode_latency_us : c.nvlink_latency_us) * 1e-6;
  switch (kind) {
    case Collective::kAllReduce:
    case Collective::kAllGather:
    case Collective::kReduceScatter: {
      const double steps = kind == Collective::kAllReduce ? 2 * (n - 1) : n - 1;
      const double wire = steps / n * bytes;
      const Curve& curve = inter ? c.ring_inter : c.ring_intra;
      cost.seconds = wire / (link_gbps * 1e9 * curve.At(bytes / n)) + steps * latency;
      (inter ? cost.inter_bytes : cost.intra_bytes) = wire;
      break;
    }
    case Collective::kAllToAll: {
      const double chunk = bytes / n;
      cost.intra_bytes = chunk * (span.per_node - 1);
      cost.inter_bytes = chunk * (n - span.per_node);
      const double intra_s =
          cost.intra_bytes / (c.nvlink_gbps * 1e9 * c.all_to_all_intra.At(chunk));
      const double inter_s =
          cost.inter_bytes / (c.internode_gbps * 1e9 * c.all_to_all_inter.At(chunk));
      cost.seconds = std::max(intra_s, inter_s) + latency;
      break;
    }
    case Collective::kSendRecv: {
      const Curve& curve = inter ? c.ring_inter : c.ring_intra;
      cost.seconds = bytes / (link_gbps * 1e9 * curve.At(bytes)) + latency;
      (inter ? cost.inter_bytes : cost.intra_bytes) = bytes;
      break;
    }
  }
  return cost;
}

}  // namespace moefold::sim
