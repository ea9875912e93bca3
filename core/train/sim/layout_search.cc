#include "core/train/sim/layout_search.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "configs/validate.h"

namespace moefold::sim {
namespace {

std::vector<int> Divisors(int n, int limit) {
  std::vector<int> out;
  for (int d = 1; d <= std::min(n, limit); ++d) {
    if (n % d == 0) out.push_back(d);
  }
  return out;
}

}  // namespace

std::vector<config::ExperimentConfig> EnumerateLayouts(const config::ExperimentConfig& base,
                                                       const Cluster& cluster,
                                                       const SearchOptions& options) {
  std::vector<config::ExperimentConfig> out;
  const int world = options.world;
  const int experts = std::max(1, base.model().moe().num_experts());
  const int layers = base.model().num_layers();
  // TP and ETP stay inside a node (their collectives are on every layer's critical path); CP up
  // to 8; PP up to the layers; virtual stages 1, 2, 4, 8.
  for (int tp : Divisors(world, cluster.gpus_per_node)) {
    for (int cp : Divisors(world / tp, 8)) {
      for (int pp : Divisors(world / (tp * cp), layers)) {
        for (int vpp : {1, 2, 4, 8}) {
          if (vpp > 1 && (pp == 1 || pp * vpp > layers)) continue;
          for (int ep : Divisors(world / pp, experts)) {
            for (int etp : Divisors(world / (pp * ep), cluster.gpus_per_node)) {
              for (int micro : options.micro_batch_sizes) {
                config::ExperimentConfig c = base;
                auto* par = c.mutable_parallel();
                par->set_tp(tp);
                par->set_cp(cp);
                par->set_dp(0);
                par->set_pp(pp);
                par->set_virtual_stages(vpp);
                par->set_ep(ep);
                par->set_etp(etp);
                par->set_sequence_parallel(tp > 1);
                par->set_schedule("auto");
                c.mutable_train()->set_micro_batch_size(micro);
                if (!config::StageLayerCounts(c).ok()) {  // the base's uneven split may not fit
                  par->set_first_stage_layers(0);
                  par->set_last_stage_layers(0);
                }
                if (config::Validate(c, world).ok()) out.push_back(std::move(c));
              }
            }
          }
        }
      }
    }
  }
  return out;
}

absl::StatusOr<SearchResult> SearchLayouts(const config::ExperimentConfig& base,
                                           const Cluster& cluster, const SearchOptions& options) {
  SearchResult result;
  std::vector<std::pair<Prediction, config::ExperimentConfig>> fitting;
  double least_over = 0;
  for (config::ExperimentConfig& c : EnumerateLayouts(base, cluster, options)) {
    absl::StatusOr<Prediction> p = Predict(c, options.world, cluster, options.predict);
    if (!p.ok()) continue;  // Validate accepted it, so this is not expected; skip defensively
    ++result.valid;
    if (!p->fits) {
      ++result.over_memory;
      if (least_over == 0 || p->memory.total_bytes < least_over) {
        least_over = p->memory.total_bytes;
        result.smallest_over = absl::StrFormat(
            "%s needs %.1f GiB per rank (parameters %.1f + gradients %.1f + optimizer %.1f + "
            "activations %.1f) > %.0f GiB",
            p->layout, p->memory.total_bytes / 1073741824.0,
            p->memory.parameter_bytes / 1073741824.0, p->memory.gradient_bytes / 1073741824.0,
            p->memory.optimizer_bytes / 1073741824.0, p->memory.activation_bytes / 1073741824.0,
            p->memory_capacity_bytes / 1073741824.0);
      }
      continue;
    }
    fitting.emplace_back(std::move(*p), std::move(c));
  }
  if (result.valid == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no layout of ", options.world, " GPUs passes validation for this model (micro-batch "
        "sizes tried: ", absl::StrJoin(options.micro_batch_sizes, ", "), "; global batch ",
        base.train().global_batch_size(), ")"));
  }
  if (fitting.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "none of the ", result.valid, " valid layouts of ", options.world,
        " GPUs fits in memory; the smallest: ", result.smallest_over));
  }
  std::stable_sort(fitting.begin(), fitting.end(), [](const auto& a, const auto& b) {
    return a.first.tokens_per_s > b.first.tokens_per_s;
  });
  for (size_t i = 0; i < fitting.size() && static_cast<int>(i) < options.top; ++i) {
    result.best.push_back(fitting[i].first);
    result.configs.push_back(fitting[i].second);
  }
  return result;
}

}  // namespace moefold::sim
