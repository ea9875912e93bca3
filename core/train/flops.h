// Analytic training FLOPs (docs/FORMULAS.md §10) and MFU. Forward + backward = 3 × forward,
// 2 FLOPs per multiply-add, active experts only, causal attention counted once.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/model/model_spec.h"

namespace moefold::train {

// F per token = 6·[Σ_attn (h·(h_q + 2·h_kv) + h_q·h) + Σ_dense 3·h·F
//               + Σ_moe (k·3·h·F_e + n_shared·3·h·F_s + h·E) + h·V] + 6·L·S·h_q
double TrainingFlopsPerToken(const model::ModelSpec& spec, int64_t seq_len);
// The same split by the op family doing the work (core/profiler.h's names): "attention" (scores
// and their weighted sum), "expert_gemm" (the routed experts), "router", and "gemm" (projections,
// dense and shared-expert FFNs, LM head). The values sum to TrainingFlopsPerToken.
std::map<std::string, double> TrainingFlopsPerTokenByFamily(const model::ModelSpec& spec,
                                                            int64_t seq_len);

// Parameters of the model, and those a token touches (top-k experts + shared + dense parts).
struct ParameterCounts {
  int64_t total = 0;
  int64_t active = 0;
};
ParameterCounts CountParameters(const model::ModelSpec& spec);

// MFU = flops_per_token · tokens_per_s / (devices · peak_flops). Returns 0 when peak is unknown (0).
double Mfu(double flops_per_token, double tokens_per_s, int devices, double peak_flops);

}  // namespace moefold::train
