// Analytic per-rank memory: parameter shards, gradients, sharded optimizer state, activations.
#include "core/train/memory_plan.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "configs/validate.h"
#include "core/train/activation_memory.h"
#include "core/train/fp8_exchange_bytes.h"
#include "core/train/model_from_config.h"
#include "parallel/pipeline_schedule.h"

namespace moefold::train {
namespace {

std::string GiB(int64_t bytes) { return absl::StrFormat("%.3f GiB", bytes / 1073741824.0); }

std::string PolicyLabel(const model::ActivationPolicy& p) {
  if (p.IsKeep()) return "keep";
  if (p.AnySwap()) return absl::StrFormat("swap α=%g", p.swap_fraction);
  const auto full = model::ActivationPolicy::Full().kinds;
  const auto selective = model::ActivationPolicy::Selective().kinds;
  if (p.kinds == full) return "recompute full";
  if (p.kinds == selective) return "recompute selective";
  return "per-kind";
}

}  // namespace

absl::StatusOr<MemoryEstimate> EstimateMemory(const config::ExperimentConfig& config,
                                              const parallel::Mapping& mapping, int rank) {
  MF_ASSIGN_OR_RETURN(const model::ActivationPolicy policy, ActivationPolicyFromConfig(config));
  return EstimateMemory(config, mapping, rank, policy);
}

absl::StatusOr<MemoryEstimate> EstimateMemory(const config::ExperimentConfig& config,
                                              const parallel::Mapping& mapping, int rank,
                                              const model::ActivationPolicy& policy) {
  MF_ASSIGN_OR_RETURN(const model::ModelSpec spec, ModelSpecFromConfig(config));
  MF_ASSIGN_OR_RETURN(const std::vector<int> stage_layers, config::StageLayerCounts(config));
  const parallel::ParallelSizes& s = mapping.sizes();
  const parallel::AttentionCoords coords = mapping.attention_coords(rank);
  const auto& par = config.parallel();
  const int chunks = par.virtual_stages(), stages = s.pp * chunks;
  const int64_t h = spec.hidden, d = spec.head_dim, tp = s.tp, cp = s.cp;
  const auto& moe = spec.moe;
  const int64_t shared_ffn =
      moe.num_shared_experts * (moe.shared_ffn > 0 ? moe.shared_ffn : moe.expert_ffn);
  const bool bf16 = config.precision().compute_dtype() == "bf16";
  const int64_t elem = bf16 ? 2 : 4;

  // Elements by the group their optimizer state is sharded over (ZeRO-1).
  int64_t dense = 0, replicated_tp = 0, replicated_norms = 0, expert = 0;
  const int64_t micro = config.train().micro_batch_size();
  int64_t activations = 0;  // bytes, one micro-batch through all of this rank's chunks
  int64_t host = 0, host_whole = 0, working = 0, keep_activations = 0;
  const ActivationLayout layout{.tp = tp, .cp = cp, .ep = s.ep, .etp = s.etp,
                                .sequence_parallel = par.sequence_parallel(),
                                .micro_batch = config.train().micro_batch_size(),
                                .seq_len = config.train().seq_len(), .act_bytes = elem,
                                .gathered_bytes = Fp8GathersCodes(config) ? 1 : elem,
                                .dispatched_bytes = Fp8DispatchBytesPerValue(config)};
  const int64_t vocab_shard = (spec.vocab + tp - 1) / tp;
  for (int c = 0; c < chunks; ++c) {
    const int v = c * s.pp + coords.pp;
    int first = 0;
    for (int i = 0; i < v; ++i) first += stage_layers[i];
    if (v == 0) dense += vocab_shard * h;
    if (v == stages - 1) {
      dense += vocab_shard * h;  // the head (a tied embedding's copy on a later stage)
      if (v == 0 && spec.tie_embeddings) dense -= vocab_shard * h;
      replicated_norms += h;
    }
    // docs/FORMULAS.md §15: the layers' saved tensors by kind under the store's policy.
    const StageActivations stage = StageActivationBytes(spec, layout, policy, first,
                                                        first + stage_layers[v], v == stages - 1);
    activations += stage.device;
    host += stage.host;
    host_whole += stage.host_whole;
    keep_activations += stage.keep_device;
    working = std::max(working, stage.working);
    for (int l = first; l < first + stage_layers[v]; ++l) {
      dense += h * d * (2 * spec.num_heads + 2 * spec.num_kv_heads) / tp;
      replicated_norms += 2 * h;
      if (spec.moe_layer[l]) {
        replicated_tp += moe.num_experts * h;
        expert += moe.num_experts / s.ep * 3 * h * moe.expert_ffn / s.etp;
        dense += 3 * h * shared_ffn / tp;
      } else {
        dense += 3 * h * spec.ffn / tp;
      }
    }
  }
  if (par.sequence_parallel()) {
    replicated_tp += replicated_norms;
    replicated_norms = 0;
  }
  MemoryEstimate m;
  m.stage = coords.pp;
  m.parameters = dense + replicated_tp + replicated_norms + expert;
  m.parameter_bytes = m.parameters * (4 + (bf16 ? 2 : 0));
  m.gradient_bytes = m.parameters * 4;
  const bool zero1 = par.zero1();
  const int64_t dp_cp = zero1 ? int64_t{s.dp} * cp : 1, tp_cp_dp = dp_cp * (zero1 ? tp : 1);
  const int64_t edp = zero1 ? mapping.edp() : 1;
  m.optimizer_bytes = 8 * ((dense + replicated_norms + dp_cp - 1) / dp_cp +
                           (replicated_tp + tp_cp_dp - 1) / tp_cp_dp + (expert + edp - 1) / edp);

  const int num_micro = static_cast<int>(config.train().global_batch_size() /
                                         (micro * std::max(1, s.dp)));
  std::string schedule = par.schedule();
  if (schedule == "auto") schedule = chunks > 1 ? "interleaved" : "1f1b";
  MF_ASSIGN_OR_RETURN(const parallel::ScheduleKind kind, parallel::ParseScheduleKind(schedule));
  m.schedule = schedule;
  m.in_flight = parallel::InFlightBound(kind, s.pp, coords.pp, std::max(1, num_micro), chunks);
  // A chunk pass holds one chunk's layers: the per-micro total over chunks, divided by chunks.
  m.activation_bytes_per_micro = activations;
  m.activation_bytes = activations * m.in_flight / chunks + working;
  m.activation_working_bytes = working;
  m.activation_host_bytes = host * m.in_flight / chunks;
  m.activation_host_whole_bytes = host_whole * m.in_flight / chunks;
  m.keep_activation_bytes = keep_activations * m.in_flight / chunks;
  m.activation_policy = PolicyLabel(policy);
  m.bubble_fraction = parallel::BubbleFraction(s.pp, std::max(1, num_micro), chunks);
  m.total_bytes = m.parameter_bytes + m.gradient_bytes + m.optimizer_bytes + m.activation_bytes;
  return m;
}

absl::Status CheckHostBudget(const config::ExperimentConfig& config,
                             const parallel::Mapping& mapping, int rank) {
  const auto& mem = config.memory();
  if (mem.activation_policy() != "swap" || mem.swap_auto() || mem.host_budget_gb() <= 0) {
    return absl::OkStatus();
  }
  MF_ASSIGN_OR_RETURN(const model::ActivationPolicy policy, ActivationPolicyFromConfig(config));
  MF_ASSIGN_OR_RETURN(const MemoryEstimate at, EstimateMemory(config, mapping, rank, policy));
  const double budget = mem.host_budget_gb() * 1073741824.0;
  const double alpha = mem.swap_fraction();
  if (static_cast<double>(at.activation_host_bytes) <= budget) return absl::OkStatus();
  // Over budget: the parts at α = 1 give the arithmetic and the largest α that fits.
  model::ActivationPolicy all_rows = policy;
  all_rows.swap_fraction = 1.0f;
  MF_ASSIGN_OR_RETURN(const MemoryEstimate one, EstimateMemory(config, mapping, rank, all_rows));
  // host(α) = whole + α · split for α > 0 (docs/FORMULAS.md §15.2).
  const SwapHostBytes bytes{one.activation_host_bytes - one.activation_host_whole_bytes,
                            one.activation_host_whole_bytes};
  const double max_alpha = ChooseSwapFraction({}, 0, 0, bytes, static_cast<int64_t>(budget));
  constexpr double kGiB = 1073741824.0;
  return absl::InvalidArgumentError(absl::StrFormat(
      "memory.host_budget_gb = %g GiB is less than memory.swap_fraction α = %g needs on rank %d: "
      "%.4f GiB swapped whole + α × %.4f GiB of token rows (%d micro-batches in flight) = %.4f "
      "GiB; %s, raise the budget, or set memory.swap_auto",
      mem.host_budget_gb(), alpha, rank, bytes.whole / kGiB, bytes.split / kGiB, at.in_flight,
      at.activation_host_bytes / kGiB,
      max_alpha > 0 ? absl::StrFormat("lower α to %g or below", max_alpha)
                    : std::string("the budget does not hold even what is swapped whole "
                                  "(recompute instead)")));
}

absl::StatusOr<PolicySuggestion> SuggestActivationPolicy(const config::ExperimentConfig& config,
                                                         const parallel::Mapping& mapping,
                                                         int rank, int64_t budget_bytes) {
  const double host_budget = config.memory().host_budget_gb() * 1073741824.0;
  std::vector<std::pair<std::string, model::ActivationPolicy>> ladder = {
      {"memory.activation_policy=keep", model::ActivationPolicy::Keep()},
      {"memory.activation_policy=recompute memory.recompute=selective",
       model::ActivationPolicy::Selective()}};
  // Swap: the largest α the host budget allows (the device holds the same at any α; a larger α
  // recomputes less).
  model::ActivationPolicy swap = model::ActivationPolicy::Swap(1.0f);
  MF_ASSIGN_OR_RETURN(const MemoryEstimate at_one, EstimateMemory(config, mapping, rank, swap));
  if (host_budget > 0 && at_one.activation_host_bytes > 0) {
    swap.swap_fraction = ChooseSwapFraction(
        {}, 0, 0,
        {at_one.activation_host_bytes - at_one.activation_host_whole_bytes,
         at_one.activation_host_whole_bytes},
        static_cast<int64_t>(host_budget));
  }
  ladder.emplace_back(absl::StrFormat("memory.activation_policy=swap memory.swap_fraction=%g",
                                      swap.swap_fraction),
                      swap);
  ladder.emplace_back("memory.activation_policy=recompute memory.recompute=full",
                      model::ActivationPolicy::Full());
  int64_t smallest = -1;
  for (const auto& [settings, policy] : ladder) {
    MF_ASSIGN_OR_RETURN(const MemoryEstimate m, EstimateMemory(config, mapping, rank, policy));
    if (m.total_bytes <= budget_bytes) return PolicySuggestion{settings, m};
    if (smallest < 0 || m.total_bytes < smallest) smallest = m.total_bytes;
  }
  return absl::NotFoundError(absl::StrFormat(
      "no activation policy fits %s on rank %d: the smallest (keep → selective → swap → full) "
      "needs %s",
      GiB(budget_bytes), rank, GiB(smallest)));
}

std::string FormatMemoryEstimate(const MemoryEstimate& m) {
  return absl::StrFormat(
      "memory per rank (pipeline stage %d, estimate):\n"
      "  parameters   %d elements, %s (f32 master weights%s)\n"
      "  gradients    %s\n"
      "  optimizer    %s (AdamW moments, ZeRO-1 shard when enabled)\n"
      "  activations  %s per micro-batch, %d in flight (%s) + %s backward working set = %s\n"
      "               policy %s (keep saves %s in flight; on the host %s, %s of it swapped whole)\n"
      "  total        %s\n"
      "pipeline bubble fraction: %.3f\n",
      m.stage, m.parameters, GiB(m.parameter_bytes),
      m.parameter_bytes > 4 * m.parameters ? " + bf16 compute copy" : "", GiB(m.gradient_bytes),
      GiB(m.optimizer_bytes), GiB(m.activation_bytes_per_micro), m.in_flight, m.schedule,
      GiB(m.activation_working_bytes), GiB(m.activation_bytes), m.activation_policy,
      GiB(m.keep_activation_bytes), GiB(m.activation_host_bytes),
      GiB(m.activation_host_whole_bytes), GiB(m.total_bytes), m.bubble_fraction);
}

JsonLine MemoryEstimateJson(const MemoryEstimate& m) {
  JsonLine json;
  json.Add("stage", m.stage)
      .Add("parameters", m.parameters)
      .Add("parameter_bytes", m.parameter_bytes)
      .Add("gradient_bytes", m.gradient_bytes)
      .Add("optimizer_bytes", m.optimizer_bytes)
      .Add("activation_bytes_per_micro", m.activation_bytes_per_micro)
      .Add("in_flight", m.in_flight)
      .Add("activation_bytes", m.activation_bytes)
      .Add("activation_policy", m.activation_policy)
      .Add("activation_working_bytes", m.activation_working_bytes)
      .Add("activation_host_bytes", m.activation_host_bytes)
      .Add("activation_host_whole_bytes", m.activation_host_whole_bytes)
      .Add("keep_activation_bytes", m.keep_activation_bytes)
      .Add("total_bytes", m.total_bytes)
      .Add("bubble_fraction", m.bubble_fraction)
      .Add("schedule", m.schedule);
  return json;
}

}  // namespace moefold::train
