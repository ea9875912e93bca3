// Analytic per-rank memory: parameter shards, gradients, sharded optimizer state, activations.
#include "core/train/memory_plan.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "configs/validate.h"
#include "core/train/model_from_config.h"
#include "parallel/pipeline_schedule.h"

namespace moefold::train {
namespace {

std::string GiB(int64_t bytes) { return absl::StrFormat("%.3f GiB", bytes / 1073741824.0); }

}  // namespace

absl::StatusOr<MemoryEstimate> EstimateMemory(const config::ExperimentConfig& config,
                                              const parallel::Mapping& mapping, int rank) {
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
  const int64_t tokens = micro * config.train().seq_len() / cp;  // this rank's tokens per micro
  const double sp = par.sequence_parallel() ? static_cast<double>(tp) : 1.0;
  int64_t activations = 0;  // bytes, one micro-batch through all of this rank's chunks
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
      // Logits (f32) of every token for this rank's vocabulary slice.
      activations += tokens * vocab_shard * 4;
    }
    for (int l = first; l < first + stage_layers[v]; ++l) {
      dense += h * d * (2 * spec.num_heads + 2 * spec.num_kv_heads) / tp;
      replicated_norms += 2 * h;
      // docs/FORMULAS.md §9.1 (bf16 bytes per token): attention 8h + 4h_kv, dense 4h + 6F,
      // MoE 4h + 4E + k(2h + 6F_e); the TP-split parts divide by tp, the rest by SP.
      const double hkv = static_cast<double>(spec.num_kv_heads) * d;
      double per_token = (4.0 * h) / sp + (4.0 * h + 4.0 * hkv) / tp;
      if (spec.moe_layer[l]) {
        replicated_tp += moe.num_experts * h;
        expert += moe.num_experts / s.ep * 3 * h * moe.expert_ffn / s.etp;
        dense += 3 * h * shared_ffn / tp;
        per_token += (4.0 * h + 4.0 * moe.num_experts) / sp +
                     moe.top_k * (2.0 * h + 6.0 * moe.expert_ffn / s.etp) / sp +
                     (shared_ffn > 0 ? 6.0 * shared_ffn / tp : 0.0);
      } else {
        dense += 3 * h * spec.ffn / tp;
        per_token += 4.0 * h / sp + 6.0 * spec.ffn / tp;
      }
      activations += static_cast<int64_t>(per_token * tokens * elem / 2);
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
  m.activation_bytes = activations * m.in_flight / chunks;
  m.bubble_fraction = parallel::BubbleFraction(s.pp, std::max(1, num_micro), chunks);
  m.total_bytes = m.parameter_bytes + m.gradient_bytes + m.optimizer_bytes + m.activation_bytes;
  return m;
}

std::string FormatMemoryEstimate(const MemoryEstimate& m) {
  return absl::StrFormat(
      "memory per rank (pipeline stage %d, estimate):\n"
      "  parameters   %d elements, %s (f32 master weights%s)\n"
      "  gradients    %s\n"
      "  optimizer    %s (AdamW moments, ZeRO-1 shard when enabled)\n"
      "  activations  %s per micro-batch, %d in flight (%s) = %s\n"
      "  total        %s\n"
      "pipeline bubble fraction: %.3f\n",
      m.stage, m.parameters, GiB(m.parameter_bytes),
      m.parameter_bytes > 4 * m.parameters ? " + bf16 compute copy" : "", GiB(m.gradient_bytes),
      GiB(m.optimizer_bytes), GiB(m.activation_bytes_per_micro), m.in_flight, m.schedule,
      GiB(m.activation_bytes), GiB(m.total_bytes), m.bubble_fraction);
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
      .Add("total_bytes", m.total_bytes)
      .Add("bubble_fraction", m.bubble_fraction)
      .Add("schedule", m.schedule);
  return json;
}

}  // namespace moefold::train
