// A cluster as the step-time simulator sees it (docs/SIMULATOR.md §1): GPUs per node, dense peaks,
// HBM, NVLink and the inter-node network per GPU, and efficiency curves (the fraction of a peak or
// of a link's bandwidth that an operation of a given size achieves). Loaded from
// configs/clusters/NAME.yaml; an unknown key, a missing field or a non-increasing curve is an
// error naming it.
//
//   MF_ASSIGN_OR_RETURN(sim::Cluster c, sim::LoadCluster("h100_sxm_ib400"));
//   double fraction = c.gemm_efficiency.At(4096);   // smallest GEMM dimension 4096
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moefold::sim {

// A piecewise-linear function of log(x): points (x, y) with x strictly increasing; clamped to the
// first and last y outside them.
class Curve {
 public:
  Curve() = default;
  // InvalidArgument unless points is non-empty, x > 0, strictly increasing and 0 < y <= 1.
  static absl::StatusOr<Curve> Create(std::vector<std::pair<double, double>> points);
  double At(double x) const;
  const std::vector<std::pair<double, double>>& points() const { return points_; }

 private:
  std::vector<std::pair<double, double>> points_;
};

struct Cluster {
  std::string name;
  int gpus_per_node = 8;
  double bf16_tflops = 0, fp8_tflops = 0;  // dense peaks per GPU
  double hbm_gib = 0, hbm_gbps = 0;         // capacity and bandwidth per GPU
  double nvlink_gbps = 0;                   // per GPU, per direction (GB/s)
  double nvlink_latency_us = 0;
  double internode_gbps = 0;                // per GPU, per direction (its NIC share, GB/s)
  double internode_latency_us = 0;
  double pcie_gbps = 0;                     // host ↔ device copies (activation swap)
  Curve gemm_efficiency;                    // fraction of peak vs the smallest of m, n, k
  double attention_efficiency = 0;          // fraction of peak of fused causal attention
  double memory_efficiency = 0;             // fraction of HBM bandwidth of elementwise ops
  // Fraction of a link's bandwidth vs the bytes each rank sends one peer in one collective.
  Curve ring_intra, ring_inter, all_to_all_intra, all_to_all_inter;
  // Dropless routing without forced balance: the busiest EP rank's rows over the mean (the
  // slowest rank sets the pace of an all-to-all and of the expert GEMMs).
  double dropless_imbalance = 1;
};

// Parses a cluster description (the YAML text of configs/clusters/*.yaml); `source` names it in
// errors. InvalidArgument naming every unknown key, missing field and bad value.
absl::StatusOr<Cluster> ParseCluster(absl::string_view yaml, absl::string_view source);

// `name_or_path`: a file path (contains '/' or ends in .yaml), or a name looked up as
// configs/clusters/NAME.yaml under the working directory and under the source tree. NotFound
// listing the clusters that exist when there is no such file.
absl::StatusOr<Cluster> LoadCluster(const std::string& name_or_path);

// The cluster names under configs/clusters/ (for error messages and --help).
std::vector<std::string> KnownClusters();

}  // namespace moefold::sim
