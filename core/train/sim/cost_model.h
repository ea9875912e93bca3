// The simulator's primitive costs (docs/SIMULATOR.md §2): how long one GEMM, one fused attention,
// one memory-bound pass and one collective take on a Cluster. Pure functions of sizes, so each is
// checked against a hand calculation (tests/train/sim/cost_model_test.cc).
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/train/sim/cluster.h"

namespace moefold::sim {

// Seconds of one GEMM (m × k) · (k × n): 2·m·n·k FLOPs at peak × gemm_efficiency(min(m, n, k)).
// `peak_tflops` is the dtype's peak (bf16 or fp8). 0 when any size is 0.
double GemmSeconds(const Cluster& c, double m, double n, double k, double peak_tflops);

// Seconds of `flops` of fused causal attention at peak × attention_efficiency.
double AttentionSeconds(const Cluster& c, double flops, double peak_tflops);

// Seconds to read and write `bytes` of HBM at hbm_gbps × memory_efficiency.
double MemoryBoundSeconds(const Cluster& c, double bytes);

// Where a group's ranks sit: how many, on how many nodes, and at most how many on one node.
struct GroupSpan {
  int size = 1;
  int nodes = 1;
  int per_node = 1;  // the most members any one node holds
  bool inter_node() const { return nodes > 1; }
};
// The span of `ranks` when ranks are packed gpus_per_node to a node (rank / gpus_per_node).
GroupSpan SpanOf(const std::vector<int>& ranks, int gpus_per_node);

enum class Collective { kAllReduce, kAllGather, kReduceScatter, kAllToAll, kSendRecv };
absl::string_view CollectiveName(Collective kind);

// One collective's cost for one rank. `bytes` is the rank's buffer: the all-reduce's buffer, the
// all-gather's output, the reduce-scatter's input, the all-to-all's whole send buffer, the
// point-to-point message.
struct CollectiveCost {
  double seconds = 0;
  double intra_bytes = 0;  // sent over NVLink by this rank
  double inter_bytes = 0;  // sent over the network by this rank
};
// Ring collectives (all-reduce 2·(n−1)/n·bytes, all-gather and reduce-scatter (n−1)/n·bytes on
// the wire) run at NVLink speed inside a node and at the per-GPU network speed across nodes, each
// × its curve at the per-peer chunk (bytes / n), plus one latency per ring step. The all-to-all
// sends (n−1)/n·bytes: (per_node − 1)/(n − 1) of it over NVLink and the rest over the network,
// both at once (the slower sets the time), plus one latency. Send-receive: one message over the
// link between the two (`span.nodes` > 1 = the network).
CollectiveCost CollectiveSeconds(const Cluster& c, Collective kind, double bytes,
                                 const GroupSpan& span);

}  // namespace moefold::sim
