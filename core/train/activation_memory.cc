// Saved-activation bytes by kind (the shapes of the layers' Saved structs), their split under a
// policy, the stage peak model, the auto swap fraction and the config's policy.
#include "core/train/activation_memory.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "ops/gemm.h"

namespace moefold::train {
namespace {

using model::SavedKind;
using model::SavePolicy;

int K(SavedKind kind) { return static_cast<int>(kind); }

}  // namespace

int64_t LayerActivations::total() const {
  int64_t sum = always;
  for (int64_t b : bytes) sum += b;
  return sum;
}

LayerActivations LayerActivationBytes(const model::ModelSpec& spec, const ActivationLayout& a,
                                      bool moe_layer) {
  LayerActivations out;
  out.recomputable.fill(true);
  auto& b = out.bytes;
  const int64_t h = spec.hidden, d = spec.head_dim, e = a.act_bytes;
  const int64_t t = a.micro_batch * a.seq_len / a.cp;         // this rank's tokens
  const int64_t tx = a.sequence_parallel ? t / a.tp : t;     // rows of the residual stream
  const bool gathers = a.sequence_parallel && a.tp > 1;      // TpGather makes a new (T, H) copy
  const int64_t g = a.gathered_bytes > 0 ? a.gathered_bytes : e;  // its element (FP8 codes: 1)
  const int64_t hq = spec.num_heads / a.tp, hkv = spec.num_kv_heads / a.tp;
  // Attention (core/model/attention_layer.h).
  b[K(SavedKind::kLayerInput)] += tx * h * e;
  b[K(SavedKind::kNormOutput)] += tx * h * e + (gathers ? t * h * g : 0);
  b[K(SavedKind::kNormStats)] += 2 * tx * 4;  // attention and FFN norms' rstd
  b[K(SavedKind::kAttentionQkv)] += t * (hq + 2 * hkv) * d * e;
  b[K(SavedKind::kAttentionOutput)] += t * hq * d * e;
  b[K(SavedKind::kAttentionLse)] += t * hq * 4;
  out.whole[K(SavedKind::kAttentionOutput)] += t * hq * d * e;
  out.whole[K(SavedKind::kAttentionLse)] += t * hq * 4;
  // The block (core/model/decoder.h): h and the FFN norm's output.
  b[K(SavedKind::kResidual)] += tx * h * e;
  b[K(SavedKind::kNormOutput)] += tx * h * e;
  auto mlp = [&](int64_t ffn) {  // core/model/mlp_layer.h
    const int64_t f = ffn / a.tp;
    b[K(SavedKind::kNormOutput)] += gathers ? t * h * g : 0;
    b[K(SavedKind::kSwiGluInput)] += t * 2 * f * e;
    b[K(SavedKind::kSwiGluOutput)] += t * f * e;
  };
  if (!moe_layer) {
    mlp(spec.ffn);
    return out;
  }
  // MoE (core/model/moe_layer.h), dropless with a balanced load: a rank routes T_r rows (its SP
  // slice, or its 1/tp share without SP), each of its local experts' ranks receives T_r·K rows
  // per EP rank on average, gathered over ETP.
  const auto& moe = spec.moe;
  const int64_t tr = a.tp > 1 && !a.sequence_parallel ? t / a.tp : tx;
  const int64_t k = moe.top_k, experts = moe.num_experts;
  const int64_t pairs = tr * k, local_rows = pairs * a.etp, fe = moe.expert_ffn / a.etp;
  const bool aux = moe.aux_type != model::AuxLossType::kNone && moe.aux_coeff > 0;
  b[K(SavedKind::kRouter)] += tr * experts * 4 * (aux ? 2 : 1);
  const bool spans = a.ep > 1 || a.etp > 1;  // the FP8 dispatch runs only where rows travel
  b[K(SavedKind::kMoeDispatched)] +=
      spans && a.dispatched_bytes > 0
          ? static_cast<int64_t>(std::ceil(static_cast<double>(local_rows * h) * a.dispatched_bytes))
          : local_rows * h * e;
  b[K(SavedKind::kSwiGluInput)] += local_rows * 2 * fe * e;
  b[K(SavedKind::kSwiGluOutput)] += local_rows * fe * e;
  b[K(SavedKind::kMoeCombined)] += pairs * h * e;
  for (SavedKind kind : {SavedKind::kRouter, SavedKind::kMoeDispatched, SavedKind::kMoeCombined}) {
    out.whole[K(kind)] = b[K(kind)];
  }
  out.whole[K(SavedKind::kSwiGluInput)] += local_rows * 2 * fe * e;
  out.whole[K(SavedKind::kSwiGluOutput)] += local_rows * fe * e;
  const bool local = a.ep == 1 && a.etp == 1;
  out.recomputable[K(SavedKind::kMoeDispatched)] = local;
  out.recomputable[K(SavedKind::kMoeCombined)] = local;
  // ids, weights, sorted pairs (i32/f32) and the aux counts stay whatever the policy.
  out.always += 3 * pairs * 4;
  if (moe.num_shared_experts > 0) {
    mlp(moe.num_shared_experts * (moe.shared_ffn > 0 ? moe.shared_ffn : moe.expert_ffn));
  }
  return out;
}

int64_t HeadActivationBytes(const model::ModelSpec& spec, const ActivationLayout& a) {
  const int64_t t = a.micro_batch * a.seq_len / a.cp;
  const int64_t tx = a.sequence_parallel ? t / a.tp : t;
  const int64_t h = spec.hidden, e = a.act_bytes, vocab = (spec.vocab + a.tp - 1) / a.tp;
  const bool gathers = a.sequence_parallel && a.tp > 1;
  // final_in, final_norm (+ its gathered copy), rstd, logits, lse.
  return 2 * tx * h * e + (gathers ? t * h * e : 0) + tx * 4 + t * vocab * e + t * 4;
}

LayerSplit SplitLayer(const LayerActivations& a, const model::ActivationPolicy& policy, int layer,
                      bool resident) {
  LayerSplit s;
  s.device = a.always;
  for (int k = 0; k < model::kNumSavedKinds; ++k) {
    SavePolicy p = policy.For(layer, static_cast<SavedKind>(k));
    if (p == SavePolicy::kSwap && resident) p = SavePolicy::kKeep;
    if (p == SavePolicy::kRecompute && !a.recomputable[k]) p = SavePolicy::kKeep;
    const int64_t bytes = a.bytes[k];
    if (p == SavePolicy::kKeep) {
      s.device += bytes;
    } else if (p == SavePolicy::kSwap) {
      // α of the token rows; all of what cannot be recomputed; what is recomputed only whole, all
      // of it unless α = 0 (ActivationStore::Release).
      const double alpha = policy.swap_fraction;
      const int64_t whole = a.recomputable[k] ? a.whole[k] : bytes;
      const int64_t split = bytes - whole;
      const int64_t whole_on_host = a.recomputable[k] && alpha == 0 ? 0 : whole;
      s.host += static_cast<int64_t>(alpha * static_cast<double>(split)) + whole_on_host;
      s.host_whole += whole_on_host;
      s.restored += bytes;
    } else {
      s.restored += bytes;
    }
  }
  return s;
}

StageActivations StageActivationBytes(const model::ModelSpec& spec, const ActivationLayout& layout,
                                      const model::ActivationPolicy& policy, int first, int last,
                                      bool head) {
  StageActivations st;
  const int n = last - first;
  std::vector<LayerSplit> splits;
  std::vector<LayerActivations> tables;
  for (int l = first; l < last; ++l) {
    tables.push_back(LayerActivationBytes(spec, layout, spec.moe_layer[l]));
    const bool resident = last - l <= policy.resident_layers;
    splits.push_back(SplitLayer(tables.back(), policy, l, resident));
    st.device += splits.back().device;
    st.host += splits.back().host;
    st.host_whole += splits.back().host_whole;
    st.keep_device += tables.back().total();
  }
  if (head) {
    st.device += HeadActivationBytes(spec, layout);
    st.keep_device += HeadActivationBytes(spec, layout);
  }
  // Backward of layer i: its restored tensors, the next layer's prefetched host rows, and the
  // gradients of its largest tensors (the SwiGLU and MoE rows, q/k/v) alive at once.
  for (int i = 0; i < n; ++i) {
    const auto& b = tables[i].bytes;
    const int64_t gradients = b[K(SavedKind::kSwiGluInput)] + b[K(SavedKind::kSwiGluOutput)] +
                              b[K(SavedKind::kMoeDispatched)] + b[K(SavedKind::kMoeCombined)];
    const int64_t ahead = i > 0 ? splits[i - 1].host : 0;
    st.working = std::max(st.working, splits[i].restored + ahead + gradients);
  }
  return st;
}

absl::StatusOr<model::ActivationPolicy> ActivationPolicyFromConfig(
    const config::ExperimentConfig& config) {
  const auto& m = config.memory();
  model::ActivationPolicy policy;
  if (m.activation_policy() == "recompute") {
    policy = m.recompute() == "full" ? model::ActivationPolicy::Full()
                                     : model::ActivationPolicy::Selective();
  } else if (m.activation_policy() == "swap") {
    policy = model::ActivationPolicy::Swap(m.swap_fraction());
  } else if (m.activation_policy() != "keep") {
    return absl::InvalidArgumentError(
        absl::StrCat("memory.activation_policy = \"", m.activation_policy(), "\""));
  }
  for (const auto& [kind_name, policy_name] : m.tensor_policy()) {
    MF_ASSIGN_OR_RETURN(const SavedKind kind, model::ParseSavedKind(kind_name));
    MF_ASSIGN_OR_RETURN(const SavePolicy p, model::ParseSavePolicy(policy_name));
    policy.kinds[K(kind)] = p;
  }
  policy.swap_fraction = m.swap_fraction();
  policy.resident_layers = m.resident_layers();
  policy.layers.assign(m.recompute_layers().begin(), m.recompute_layers().end());
  return policy;
}

float ChooseSwapFraction(SwapHostBytes per_layer, double layer_forward_s, double host_bytes_per_s,
                         SwapHostBytes per_rank, int64_t host_budget_bytes) {
  // The largest α with whole + α · split ≤ limit: 0 when the whole part alone is over it.
  auto within = [](const SwapHostBytes& b, double limit) {
    if (limit < static_cast<double>(b.whole)) return 0.0;
    return b.split > 0 ? (limit - static_cast<double>(b.whole)) / static_cast<double>(b.split)
                       : 1.0;
  };
  double alpha = 1.0;
  if (per_layer.split + per_layer.whole > 0 && host_bytes_per_s > 0) {
    alpha = std::min(alpha, within(per_layer, layer_forward_s * host_bytes_per_s));
  }
  if (host_budget_bytes > 0 && per_rank.split + per_rank.whole > 0) {
    alpha = std::min(alpha, within(per_rank, static_cast<double>(host_budget_bytes)));
  }
  alpha = std::clamp(alpha, 0.0, 1.0);
  return static_cast<float>(std::floor(alpha * 64.0) / 64.0);
}

double MeasureHostLinkBandwidth(const Device& device, int64_t bytes) {
  model::HostBuffer host(static_cast<size_t>(bytes), model::ActivationStore::HostArena(device));
  std::memset(host.data(), 1, static_cast<size_t>(bytes));
  Tensor dev = Tensor::Empty({bytes}, DType::kU8, device);
  Stream& stream = DefaultStream(device);
  double best = 0;
  for (int i = 0; i < 4; ++i) {  // the first is a warm-up
    const auto start = std::chrono::steady_clock::now();
    if (!model::CopyBytes(dev.raw_data(), host.data(), host.bytes(), stream).ok()) return 0;
    stream.Synchronize();
    if (i == 0) continue;
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s > 0) best = std::max(best, static_cast<double>(bytes) / s);
  }
  return best;
}

double MeasureGemmFlops(const Device& device, DType dtype, int64_t m, int64_t k, int64_t n) {
  m = std::max<int64_t>(m, 1);
  k = std::max<int64_t>(k, 1);
  n = std::max<int64_t>(n, 1);
  Tensor a = Tensor::Empty({m, k}, dtype, device), b = Tensor::Empty({n, k}, dtype, device);
  Tensor c = Tensor::Empty({m, n}, dtype, device);
  a.SetZero();  // defined values (no NaN or denormal slow paths); BLAS skips no zeros
  b.SetZero();
  Stream& stream = DefaultStream(device);
  double best = 0;
  for (int i = 0; i < 4; ++i) {  // the first is a warm-up
    const auto start = std::chrono::steady_clock::now();
    ops::Gemm(a, false, b, true, 1.0f, 0.0f, &c, stream);
    stream.Synchronize();
    if (i == 0) continue;
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (s > 0) best = std::max(best, 2.0 * static_cast<double>(m * k * n) / s);
  }
  return best;
}

}  // namespace moefold::train
