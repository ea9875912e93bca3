// FLOP and parameter accounting from the model's shape alone (no profiling).
#include "core/train/flops.h"

namespace moefold::train {

std::map<std::string, double> TrainingFlopsPerTokenByFamily(const model::ModelSpec& spec,
                                                            int64_t seq_len) {
  const double h = spec.hidden, hq = static_cast<double>(spec.num_heads) * spec.head_dim;
  const double hkv = static_cast<double>(spec.num_kv_heads) * spec.head_dim;
  const auto& moe = spec.moe;
  const double shared_ffn = moe.shared_ffn > 0 ? moe.shared_ffn : moe.expert_ffn;
  // Multiply-adds per token, by the op family whose kernels do them (core/profiler.h).
  double gemm = h * spec.vocab, expert_gemm = 0, router = 0;  // LM head
  for (int l = 0; l < spec.num_layers; ++l) {
    gemm += h * (hq + 2 * hkv) + hq * h;
    if (spec.moe_layer[l]) {
      expert_gemm += moe.top_k * 3 * h * moe.expert_ffn;
      gemm += moe.num_shared_experts * 3 * h * shared_ffn;
      router += h * moe.num_experts;
    } else {
      gemm += 3 * h * spec.ffn;
    }
  }
  return {{"attention", 6.0 * spec.num_layers * static_cast<double>(seq_len) * hq},
          {"gemm", 6 * gemm},
          {"expert_gemm", 6 * expert_gemm},
          {"router", 6 * router}};
}

double TrainingFlopsPerToken(const model::ModelSpec& spec, int64_t seq_len) {
  double total = 0;
  for (const auto& [family, flops] : TrainingFlopsPerTokenByFamily(spec, seq_len)) total += flops;
  return total;
}

ParameterCounts CountParameters(const model::ModelSpec& spec) {
  const int64_t h = spec.hidden, d = spec.head_dim;
  const auto& moe = spec.moe;
  const int64_t shared_ffn = moe.shared_ffn > 0 ? moe.shared_ffn : moe.expert_ffn;
  ParameterCounts c;
  const int64_t embed = static_cast<int64_t>(spec.vocab) * h;
  c.total = c.active = embed * (spec.tie_embeddings ? 1 : 2) + h;  // + final norm
  for (int l = 0; l < spec.num_layers; ++l) {
    const int64_t attn = h * d * (2 * spec.num_heads + 2 * spec.num_kv_heads) + 2 * h;  // + norms
    c.total += attn;
    c.active += attn;
    if (spec.moe_layer[l]) {
      const int64_t expert = 3 * h * moe.expert_ffn;
      const int64_t shared = moe.num_shared_experts * 3 * h * shared_ffn;
      const int64_t router = h * moe.num_experts;
      c.total += moe.num_experts * expert + shared + router;
      c.active += moe.top_k * expert + shared + router;
    } else {
      c.total += 3 * h * spec.ffn;
      c.active += 3 * h * spec.ffn;
    }
  }
  return c;
}

double Mfu(double flops_per_token, double tokens_per_s, int devices, double peak_flops) {
  if (peak_flops <= 0 || devices <= 0) return 0;
  return flops_per_token * tokens_per_s / (devices * peak_flops);
}

}  // namespace moefold::train
