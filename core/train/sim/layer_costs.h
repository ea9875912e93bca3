// What one micro-batch costs one rank, layer by layer (docs/SIMULATOR.md §3): the compute of each
// op family (forward and backward seconds, and the training FLOPs flops.h counts for it) and each
// communication (group kind, collective, bytes, inside a node or across nodes, seconds, and the
// part no computation hides). The layout, routing mode, precision and activation policy are
// resolved once into a SimContext.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "configs/moefold.pb.h"
#include "core/model/model_spec.h"
#include "core/train/sim/cluster.h"
#include "core/train/sim/cost_model.h"
#include "parallel/mapping.h"

namespace moefold::sim {

struct SimContext {
  model::ModelSpec spec;
  int tp = 1, cp = 1, dp = 1, pp = 1, vpp = 1, ep = 1, etp = 1, edp = 1;
  bool sequence_parallel = false;
  int64_t micro = 1, seq = 1;
  int num_micro = 1;          // micro-batches per step per pipeline
  double gemm_peak = 0;       // TFLOP/s the GEMMs run at (fp8 peak under an FP8 recipe)
  bool fp8 = false;
  // Bytes per element of the SP gathers in front of the projections: 1 where they move FP8 codes
  // (a per-tensor recipe with precision.fp8_gather, core/model/fp8_gather.h), else the activation's.
  double sp_gather_bytes = 2;
  // Bytes per element of the exchanges towards the experts (the forward's dispatch and the
  // combine's backward, and their ETP gathers) where they move FP8 codes and their scales
  // (precision.fp8_dispatch, core/model/fp8_dispatch.h); 0 = the activation's.
  double fp8_dispatch_bytes = 0;
  bool zero1 = false;
  // Rows each rank's experts process over the balanced mean: 1 under forced balance; the
  // capacity factor when every block is padded to capacity; min(capacity factor, dropless
  // imbalance) with token dropping; the cluster's dropless_imbalance when dropless.
  double expert_load = 1;
  std::string routing;        // "forced_balanced", "capacity", "dropless"
  int dispatch_chunks = 1;    // expert chunks whose exchange overlaps the others' GEMMs
  // "all_to_all": moefold's dispatcher, one copy of a token per chosen expert. "node_dedup": a
  // what-if for comparing with runs that used a node-aware dispatcher (DeepEP): across nodes a
  // token travels once per destination node and is copied to its experts' GPUs over NVLink.
  std::string dispatcher = "all_to_all";
  std::string activation_policy = "keep";
  double swap_fraction = 0;
  double activation_bytes_per_layer = 0;  // what swapping copies (train::EstimateMemory, stage 0)
  std::string compression = "none";  // "none" or "ef21:<compressor>"
  double grad_bytes_per_element = 4;  // what the gradient reduction moves per element
  GroupSpan tp_span, cp_span, ep_span, etp_span, dp_cp_span, edp_span, pp_span;
};

// Resolves the config's model, layout and options on `mapping` and `cluster`. InvalidArgument when
// the model does not convert (ModelSpecFromConfig).
struct PredictOptions {
  std::string dispatcher = "all_to_all";  // or "node_dedup" (SimContext::dispatcher)
};
absl::StatusOr<SimContext> MakeContext(const config::ExperimentConfig& config,
                                       const parallel::Mapping& mapping, const Cluster& cluster,
                                       const PredictOptions& options = {});

// node_dedup: the expected number of nodes other than the sender's that hold at least one of a
// token's k experts, with the E experts spread evenly over the EP group's `nodes` nodes and the k
// chosen uniformly without replacement: (nodes − 1)·(1 − C(E − E/nodes, k) / C(E, k)).
double RemoteNodesPerToken(int experts, int top_k, int nodes);

struct OpTime {
  std::string family;  // flops.h's families ("attention", "gemm", "expert_gemm", "router") and
                       // "elementwise", "recompute", "swap"
  double fwd = 0, bwd = 0;  // seconds per micro-batch
  double flops = 0;         // training FLOPs (forward + backward) this rank does, per micro-batch
};

struct CommTime {
  std::string name;     // what it moves ("attention input", "dispatch", "K/V ring", ...)
  std::string group;    // the group kind (parallel::GroupKindName): "tp", "ep", "cp", "pp", ...
  Collective kind = Collective::kAllGather;
  bool inter_node = false;
  int count = 1;        // how many per micro-batch (forward and backward together)
  double bytes = 0;     // per call, this rank's buffer (cost_model.h)
  double seconds = 0;   // all `count` calls
  double exposed = 0;   // the part on the critical path
};

// `count` calls of collective `kind` moving `bytes` a call over `span`, all exposed until the
// schedule says what overlaps.
CommTime Comm(const Cluster& cluster, std::string name, std::string group, Collective kind,
              const GroupSpan& span, double bytes, int count = 1);

struct LayerCost {
  std::string kind;  // "dense", "moe", "embedding", "head"
  std::vector<OpTime> ops;
  std::vector<CommTime> comms;
  double Forward() const;      // forward compute seconds
  double Backward() const;     // backward compute seconds (recompute and swap included)
  double Exposed() const;      // exposed communication seconds
  double Total() const { return Forward() + Backward() + Exposed(); }
  double Flops() const;
};

// One transformer layer (dense or MoE), the embedding (first stage) and the LM head with its
// loss (last stage), for one micro-batch on one rank.
LayerCost CostLayer(const SimContext& ctx, const Cluster& cluster, bool moe);
LayerCost CostEmbedding(const SimContext& ctx, const Cluster& cluster);
LayerCost CostHead(const SimContext& ctx, const Cluster& cluster);

}  // namespace moefold::sim
