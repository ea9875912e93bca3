// Validate(): one function per config section, each appending human-readable problems (with the
// arithmetic) to a shared list; nothing stops at the first problem.
#include "configs/validate.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace moefold::config {
namespace {

using Problems = std::vector<std::string>;

// `name` = `value` must be > 0 (written !(v > 0) so NaN fails too).
template <typename T>
void Positive(Problems* p, absl::string_view name, T value) {
  if (!(value > 0)) p->push_back(absl::StrCat(name, " = ", value, " must be > 0"));
}

template <typename T>
void NonNegative(Problems* p, absl::string_view name, T value) {
  if (!(value >= 0)) p->push_back(absl::StrCat(name, " = ", value, " must be >= 0"));
}

void Fraction(Problems* p, absl::string_view name, float value, bool allow_zero) {
  const bool ok = allow_zero ? (value >= 0 && value <= 1) : (value > 0 && value <= 1);
  if (!ok) {
    p->push_back(
        absl::StrCat(name, " = ", value, " must be in ", allow_zero ? "[0, 1]" : "(0, 1]"));
  }
}

void OneOf(Problems* p, absl::string_view name, const std::string& value,
           std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return;
  }
  p->push_back(
      absl::StrCat(name, " = \"", value, "\" is not one of: ", absl::StrJoin(allowed, ", ")));
}

// "a_name a % b_name b = r: why" when b > 0 and a % b != 0.
void Divisible(Problems* p, absl::string_view a_name, int64_t a, absl::string_view b_name,
               int64_t b, absl::string_view why) {
  if (b > 0 && a % b != 0) {
    p->push_back(absl::StrCat(a_name, " ", a, " % ", b_name, " ", b, " = ", a % b,
                              why.empty() ? "" : ": ", why));
  }
}

int HeadDim(const ModelConfig& m) {
  if (m.head_dim() > 0) return m.head_dim();
  return m.num_heads() > 0 ? m.hidden_size() / m.num_heads() : 0;
}

void CheckModel(const ExperimentConfig& c, Problems* p) {
  const ModelConfig& m = c.model();
  Positive(p, "model.vocab_size", m.vocab_size());
  Positive(p, "model.hidden_size", m.hidden_size());
  Positive(p, "model.num_layers", m.num_layers());
  Positive(p, "model.num_heads", m.num_heads());
  Positive(p, "model.num_kv_heads", m.num_kv_heads());
  NonNegative(p, "model.head_dim", m.head_dim());
  if (m.num_layers() > CountMoeLayers(c)) Positive(p, "model.ffn_hidden_size", m.ffn_hidden_size());
  Positive(p, "model.rope_theta", m.rope_theta());
  Positive(p, "model.norm_eps", m.norm_eps());
  Positive(p, "model.init_std", m.init_std());
  if (m.head_dim() == 0 && m.num_heads() > 0 && m.hidden_size() > 0) {
    Divisible(p, "model.hidden_size", m.hidden_size(), "model.num_heads", m.num_heads(),
              "head_dim 0 means hidden_size / num_heads (set model.head_dim to decouple them)");
  }
  const int head_dim = HeadDim(m);
  const bool whole_heads =
      m.head_dim() > 0 || (m.num_heads() > 0 && m.hidden_size() % m.num_heads() == 0);
  if (whole_heads && head_dim > 0 && head_dim % 2 != 0) {
    p->push_back(m.head_dim() > 0
                     ? absl::StrCat("model.head_dim ", head_dim, " is odd: RoPE rotates pairs")
                     : absl::StrCat("head_dim = hidden_size ", m.hidden_size(), " / num_heads ",
                                    m.num_heads(), " = ", head_dim, " is odd: RoPE rotates pairs"));
  }
  if (m.num_kv_heads() > 0) {
    Divisible(p, "model.num_heads", m.num_heads(), "model.num_kv_heads", m.num_kv_heads(),
              "each KV head serves num_heads / num_kv_heads query heads");
  }
  if (c.data().tokenizer() == "byte" && m.vocab_size() > 0 && m.vocab_size() < 257) {
    p->push_back(absl::StrCat("model.vocab_size ", m.vocab_size(),
                              " < 257 needed by data.tokenizer \"byte\" (256 bytes + "
                              "end-of-document)"));
  }
}

void CheckMoe(const ExperimentConfig& c, Problems* p) {
  const MoeConfig& moe = c.model().moe();
  NonNegative(p, "model.moe.num_experts", moe.num_experts());
  NonNegative(p, "model.moe.first_dense_layers", moe.first_dense_layers());
  NonNegative(p, "model.moe.layer_freq", moe.layer_freq());
  NonNegative(p, "model.moe.num_shared_experts", moe.num_shared_experts());
  NonNegative(p, "model.moe.shared_expert_ffn_hidden_size", moe.shared_expert_ffn_hidden_size());
  OneOf(p, "model.moe.score_function", moe.score_function(), {"softmax", "softmax_pre", "sigmoid"});
  OneOf(p, "model.moe.aux_loss_type", moe.aux_loss_type(), {"none", "batch", "seq"});
  NonNegative(p, "model.moe.aux_loss_coeff", moe.aux_loss_coeff());
  NonNegative(p, "model.moe.z_loss_coeff", moe.z_loss_coeff());
  NonNegative(p, "model.moe.capacity_factor", moe.capacity_factor());
  NonNegative(p, "model.moe.dispatch_chunks", moe.dispatch_chunks());
  OneOf(p, "model.moe.drop_policy", moe.drop_policy(), {"probs", "position"});
  if (moe.pad_to_capacity() && !(moe.capacity_factor() > 0)) {
    p->push_back("model.moe.pad_to_capacity needs model.moe.capacity_factor > 0 (dropless has no "
                 "capacity to pad to)");
  }
  Positive(p, "model.moe.scaling_factor", moe.scaling_factor());
  NonNegative(p, "model.moe.expert_bias_rate", moe.expert_bias_rate());
  if (moe.expert_bias() && moe.score_function() != "sigmoid") {
    p->push_back(absl::StrCat("model.moe.expert_bias needs score_function \"sigmoid\" (is \"",
                              moe.score_function(), "\"): DeepSeek-V3's aux-loss-free routing"));
  }
  if (moe.num_experts() <= 0 || CountMoeLayers(c) == 0) return;

  if (moe.expert_ffn_hidden_size() <= 0) {
    p->push_back(absl::StrCat("model.moe.expert_ffn_hidden_size = ", moe.expert_ffn_hidden_size(),
                              " must be > 0: model.moe.num_experts ", moe.num_experts(), " makes ",
                              CountMoeLayers(c), " layer(s) MoE"));
  }
  Positive(p, "model.moe.top_k", moe.top_k());
  if (moe.top_k() > moe.num_experts()) {
    p->push_back(absl::StrCat("model.moe.top_k ", moe.top_k(), " > model.moe.num_experts ",
                              moe.num_experts()));
  }
  NonNegative(p, "model.moe.num_groups", moe.num_groups());
  if (moe.num_groups() == 0 && moe.group_topk() != 0) {
    p->push_back(absl::StrCat("model.moe.group_topk ", moe.group_topk(),
                              " needs model.moe.num_groups > 0 (group-limited routing is off)"));
  }
  if (moe.num_groups() > 0) {
    Divisible(p, "model.moe.num_experts", moe.num_experts(), "model.moe.num_groups",
              moe.num_groups(), "groups must hold equal numbers of experts");
    if (moe.group_topk() < 1 || moe.group_topk() > moe.num_groups()) {
      p->push_back(absl::StrCat("model.moe.group_topk ", moe.group_topk(),
                                " must be in [1, num_groups ", moe.num_groups(), "]"));
    } else if (moe.top_k() > 0) {
      Divisible(p, "model.moe.top_k", moe.top_k(), "model.moe.group_topk", moe.group_topk(),
                "each chosen group contributes top_k / group_topk experts");
      const int per_group = moe.num_experts() / moe.num_groups();
      const int from_each = moe.top_k() / moe.group_topk();
      if (moe.top_k() % moe.group_topk() == 0 && from_each > per_group) {
        p->push_back(absl::StrCat("model.moe.top_k ", moe.top_k(), " / group_topk ",
                                  moe.group_topk(), " = ", from_each, " > experts per group ",
                                  moe.num_experts(), " / ", moe.num_groups(), " = ", per_group));
      }
    }
  }
}

void CheckParallel(const ExperimentConfig& c, int world, Problems* p) {
  const ParallelConfig& par = c.parallel();
  if (world < 1) p->push_back(absl::StrCat("world size ", world, " must be >= 1"));
  Positive(p, "parallel.tp", par.tp());
  Positive(p, "parallel.cp", par.cp());
  NonNegative(p, "parallel.dp (0 = derived)", par.dp());
  Positive(p, "parallel.pp", par.pp());
  Positive(p, "parallel.etp", par.etp());
  Positive(p, "parallel.ep", par.ep());
  Positive(p, "parallel.virtual_stages", par.virtual_stages());
  Positive(p, "parallel.grad_bucket_elements", par.grad_bucket_elements());
  if (!(par.comm_timeout_s() > 0 && par.comm_timeout_s() <= 86400)) {
    p->push_back(absl::StrCat("parallel.comm_timeout_s = ", par.comm_timeout_s(),
                              " must be in (0, 86400] seconds"));
  }
  std::vector<std::string> dims = absl::StrSplit(par.order(), '-');
  std::sort(dims.begin(), dims.end());
  if (dims != std::vector<std::string>{"cp", "dp", "ep", "pp", "tp"}) {
    p->push_back(absl::StrCat("parallel.order \"", par.order(),
                              "\" must name tp, cp, ep, dp and pp once each, joined by '-' "
                              "(e.g. \"tp-cp-ep-dp-pp\")"));
  }
  if (world < 1 || par.tp() < 1 || par.cp() < 1 || par.pp() < 1 || par.etp() < 1 || par.ep() < 1 ||
      par.dp() < 0 || par.virtual_stages() < 1) {
    return;  // the mesh arithmetic below needs positive sizes
  }
  const int64_t tp = par.tp(), cp = par.cp(), pp = par.pp(), etp = par.etp(), ep = par.ep();
  if (par.dp() > 0) {
    const int64_t product = tp * cp * par.dp() * pp;
    if (product != world) {
      p->push_back(absl::StrCat("world ", world, " != tp ", tp, " × cp ", cp, " × dp ", par.dp(),
                                " × pp ", pp, " = ", product));
    }
  } else if (world % (tp * cp * pp) != 0) {
    p->push_back(absl::StrCat("world ", world, " % (tp ", tp, " × cp ", cp, " × pp ", pp, " = ",
                              tp * cp * pp, ") = ", world % (tp * cp * pp),
                              ": dp = world / (tp × cp × pp) must be whole"));
  }
  if (world % (etp * ep * pp) != 0) {
    p->push_back(absl::StrCat("world ", world, " % (etp ", etp, " × ep ", ep, " × pp ", pp, " = ",
                              etp * ep * pp, ") = ", world % (etp * ep * pp),
                              ": edp = world / (etp × ep × pp) must be whole"));
  }

  const ModelConfig& m = c.model();
  const MoeConfig& moe = m.moe();
  Divisible(p, "model.num_heads", m.num_heads(), "parallel.tp", tp,
            "each TP rank holds whole query heads");
  Divisible(p, "model.num_kv_heads", m.num_kv_heads(), "parallel.tp", tp,
            "each TP rank holds whole KV heads (KV-head replication is not supported)");
  if (m.num_layers() > CountMoeLayers(c)) {
    Divisible(p, "model.ffn_hidden_size", m.ffn_hidden_size(), "parallel.tp", tp,
              "the dense FFN is split column-wise over TP");
  }
  if (moe.num_experts() > 0 && CountMoeLayers(c) > 0) {
    Divisible(p, "model.moe.num_experts", moe.num_experts(), "parallel.ep", ep,
              "each EP rank owns num_experts / ep experts");
    Divisible(p, "model.moe.expert_ffn_hidden_size", moe.expert_ffn_hidden_size(), "parallel.etp",
              etp, "each expert's FFN is split over ETP");
    if (moe.num_shared_experts() > 0) {
      const int shared = moe.shared_expert_ffn_hidden_size() > 0
                             ? moe.shared_expert_ffn_hidden_size()
                             : moe.expert_ffn_hidden_size();
      Divisible(p, "shared expert FFN", shared, "parallel.tp", tp,
                "shared experts are split over TP like the dense FFN");
    }
  }
  const int64_t seq = c.train().seq_len();
  if (cp > 1) {
    Divisible(p, "train.seq_len", seq, "(2 × parallel.cp)", 2 * cp,
              "context parallelism cuts the sequence into 2·cp chunks");
  }
  if (tp > 1 && seq % cp == 0) {
    if (par.sequence_parallel()) {
      Divisible(p, absl::StrCat("train.seq_len / cp = ", seq / cp), seq / cp, "parallel.tp", tp,
                "sequence parallelism splits each rank's tokens over TP");
    } else if (CountMoeLayers(c) > 0) {
      Divisible(p, absl::StrCat("train.seq_len / cp = ", seq / cp), seq / cp, "parallel.tp", tp,
                "without sequence parallelism each TP rank routes 1/tp of the tokens through "
                "the MoE layers");
    }
  }
  NonNegative(p, "parallel.first_stage_layers", par.first_stage_layers());
  NonNegative(p, "parallel.last_stage_layers", par.last_stage_layers());
  OneOf(p, "parallel.schedule", par.schedule(), {"auto", "afab", "1f1b", "interleaved"});
  if (m.num_layers() > 0) {
    if (auto counts = StageLayerCounts(c); !counts.ok()) {
      p->push_back(std::string(counts.status().message()));
    }
  }
  if (par.schedule() == "interleaved" && par.virtual_stages() < 2) {
    p->push_back("parallel.schedule \"interleaved\" needs parallel.virtual_stages > 1");
  }
  if (par.virtual_stages() > 1 && (par.schedule() == "afab" || par.schedule() == "1f1b")) {
    p->push_back(absl::StrCat("parallel.virtual_stages ", par.virtual_stages(),
                              " needs parallel.schedule \"interleaved\" (or \"auto\"), not \"",
                              par.schedule(), "\""));
  }
  if (par.virtual_stages() > 1 && pp == 1) {
    p->push_back(absl::StrCat("parallel.virtual_stages ", par.virtual_stages(),
                              " needs pp > 1 (interleaved 1F1B)"));
  }

  const TrainConfig& t = c.train();
  const int dp = DerivedDp(c, world);
  if (dp > 0 && t.micro_batch_size() > 0 && t.global_batch_size() > 0) {
    const int64_t per_step = int64_t{t.micro_batch_size()} * dp;
    if (t.global_batch_size() % per_step != 0) {
      p->push_back(absl::StrCat("train.global_batch_size ", t.global_batch_size(),
                                " % (micro_batch_size ", t.micro_batch_size(), " × dp ", dp, " = ",
                                per_step, ") = ", t.global_batch_size() % per_step));
    } else if (par.virtual_stages() > 1 && (t.global_batch_size() / per_step) % pp != 0) {
      p->push_back(absl::StrCat("micro-batches per step ", t.global_batch_size() / per_step,
                                " % pp ", pp, " = ", (t.global_batch_size() / per_step) % pp,
                                ": interleaved 1F1B needs a multiple of pp"));
    }
  }
  const auto& weights = c.compression().rank_weights();
  if (!weights.empty() && dp > 0 && weights.size() != dp) {
    p->push_back(absl::StrCat("compression.rank_weights has ", weights.size(), " entries != dp ",
                              dp, " (one weight per data-parallel rank)"));
  }
}

void CheckTrainAndOptimizer(const ExperimentConfig& c, Problems* p) {
  const TrainConfig& t = c.train();
  Positive(p, "train.steps", t.steps());
  Positive(p, "train.global_batch_size", t.global_batch_size());
  Positive(p, "train.micro_batch_size", t.micro_batch_size());
  Positive(p, "train.seq_len", t.seq_len());
  OneOf(p, "train.device", t.device(), {"cpu", "cuda"});
  if (!(t.max_loss_spike() == 0 || t.max_loss_spike() > 1)) {
    p->push_back(absl::StrCat("train.max_loss_spike = ", t.max_loss_spike(),
                              " must be 0 (off) or > 1 (a multiple of the loss EMA)"));
  }
  NonNegative(p, "train.eval_every", t.eval_every());
  if (t.eval_every() > 0) Positive(p, "train.eval_iters (with train.eval_every)", t.eval_iters());
  NonNegative(p, "train.eval_iters", t.eval_iters());
  if (!(t.hang_timeout_s() >= 0 && t.hang_timeout_s() <= 86400)) {
    p->push_back(absl::StrCat("train.hang_timeout_s = ", t.hang_timeout_s(),
                              " must be in [0, 86400] seconds (0 = no watchdog)"));
  }
  NonNegative(p, "train.verify_every (0 = off)", t.verify_every());
  OneOf(p, "train.on_mismatch", t.on_mismatch(), {"stop", "warn"});
  if (t.verify_every() > 0 && c.compression().method() == "ef21") {
    p->push_back(
        "train.verify_every does not combine with compression.method ef21: the second run of a "
        "step would reuse error-feedback state the first one consumed");
  }

  const OptimizerConfig& o = c.optimizer();
  OneOf(p, "optimizer.name", o.name(), {"adamw", "spam", "stable_spam"});
  NonNegative(p, "optimizer.spam_reset_interval (0 = never)", o.spam_reset_interval());
  Positive(p, "optimizer.spam_theta", o.spam_theta());
  NonNegative(p, "optimizer.spam_clip_delay", o.spam_clip_delay());
  NonNegative(p, "optimizer.spam_warmup_steps", o.spam_warmup_steps());
  for (const auto& [name, gamma] : {std::pair<const char*, float>{"optimizer.spam_gamma1",
                                                                  o.spam_gamma1()},
                                    {"optimizer.spam_gamma2", o.spam_gamma2()},
                                    {"optimizer.spam_gamma3", o.spam_gamma3()}}) {
    if (!(gamma >= 0 && gamma < 1)) {
      p->push_back(absl::StrCat(name, " = ", gamma, " must be in [0, 1)"));
    }
  }
  if (o.name() != "adamw" && !c.checkpoint().dir().empty()) {
    p->push_back(absl::StrCat("optimizer.name ", o.name(),
                              ": checkpoints do not hold the SPAM state yet; clear checkpoint.dir"));
  }
  if (o.name() != "adamw" && c.compression().method() == "ef21") {
    p->push_back(absl::StrCat("optimizer.name ", o.name(),
                              " does not combine with compression.method ef21 yet"));
  }
  NonNegative(p, "optimizer.min_lr", o.min_lr());
  if (!(o.lr() >= o.min_lr())) {
    p->push_back(absl::StrCat("optimizer.lr ", o.lr(), " < optimizer.min_lr ", o.min_lr()));
  }
  if (!(o.beta1() >= 0 && o.beta1() < 1)) {
    p->push_back(absl::StrCat("optimizer.beta1 = ", o.beta1(), " must be in [0, 1)"));
  }
  if (!(o.beta2() >= 0 && o.beta2() < 1)) {
    p->push_back(absl::StrCat("optimizer.beta2 = ", o.beta2(), " must be in [0, 1)"));
  }
  Positive(p, "optimizer.eps", o.eps());
  NonNegative(p, "optimizer.weight_decay", o.weight_decay());
  NonNegative(p, "optimizer.grad_clip (0 = off)", o.grad_clip());
  OneOf(p, "optimizer.schedule", o.schedule(), {"cosine", "wsd", "constant"});
  NonNegative(p, "optimizer.warmup_steps", o.warmup_steps());
  if (o.warmup_steps() > t.steps() && t.steps() > 0) {
    p->push_back(
        absl::StrCat("optimizer.warmup_steps ", o.warmup_steps(), " > train.steps ", t.steps()));
  }
  if (o.schedule() == "wsd") {
    Fraction(p, "optimizer.decay_fraction", o.decay_fraction(), /*allow_zero=*/true);
    const int decay = static_cast<int>(o.decay_fraction() * t.steps());
    if (o.warmup_steps() <= t.steps() && o.warmup_steps() + decay > t.steps()) {
      p->push_back(absl::StrCat("optimizer.warmup_steps ", o.warmup_steps(), " + decay_fraction ",
                                o.decay_fraction(), " × train.steps ", t.steps(), " = ",
                                o.warmup_steps() + decay, " > train.steps ", t.steps()));
    }
  }
}

// The activation store's settings (core/model/activation_store.h). The kind names are the store's
// (SavedKindName); tests/model/activation_store_test.cc checks the two lists agree.
void CheckMemory(const MemoryConfig& m, int num_layers, Problems* p) {
  const float alpha = m.swap_fraction();
  if (!(alpha >= 0 && alpha <= 1)) {
    p->push_back(absl::StrCat("memory.swap_fraction = ", alpha, " must be in [0, 1]: α is the ",
                              "share of each saved tensor's token rows sent to the host (",
                              alpha < 0 ? "below 0" : "above 1 = more rows than the tensor has",
                              ")"));
  }
  OneOf(p, "memory.recompute", m.recompute(), {"selective", "full"});
  if (m.host_budget_gb() < 0) {
    p->push_back(absl::StrCat("memory.host_budget_gb = ", m.host_budget_gb(), " must be >= 0"));
  }
  if (m.host_link_gbps() < 0) {
    p->push_back(absl::StrCat("memory.host_link_gbps = ", m.host_link_gbps(), " must be >= 0"));
  }
  NonNegative(p, "memory.resident_layers", m.resident_layers());
  for (int layer : m.recompute_layers()) {
    if (layer < 0 || layer >= num_layers) {
      p->push_back(absl::StrCat("memory.recompute_layers has ", layer, ", outside [0, ",
                                num_layers, ") (model.num_layers = ", num_layers, ")"));
    }
  }
  static constexpr std::initializer_list<const char*> kKinds = {
      "layer_input",   "norm_output", "norm_stats",     "attention_qkv",
      "attention_output", "attention_lse", "residual",  "swiglu_input",
      "swiglu_output", "router",      "moe_dispatched", "moe_combined"};
  for (const auto& [kind, policy] : m.tensor_policy()) {
    if (std::find(kKinds.begin(), kKinds.end(), kind) == kKinds.end()) {
      p->push_back(absl::StrCat("memory.tensor_policy has unknown tensor kind \"", kind,
                                "\" (known: ", absl::StrJoin(kKinds, ", "), ")"));
    }
    OneOf(p, absl::StrCat("memory.tensor_policy.", kind), policy, {"keep", "recompute", "swap"});
    if (kind == "layer_input" && policy != "keep") {
      p->push_back("memory.tensor_policy.layer_input must be keep: it is what recomputation "
                   "starts from");
    }
  }
}

// The blockwise FP8 recipe quantises every GEMM operand in blocks of 128 along K and weights in
// 128×128 blocks, so each rank's slice of every projection dimension must be a multiple of 128.
void CheckFp8Blocks(const ExperimentConfig& c, Problems* p) {
  const ModelConfig& m = c.model();
  const ParallelConfig& par = c.parallel();
  if (par.tp() < 1 || par.etp() < 1) return;
  constexpr int64_t kBlock = 128;
  const int64_t tp = par.tp(), etp = par.etp(), head_dim = HeadDim(m);
  auto block = [&](absl::string_view what, int64_t dim, int64_t over, absl::string_view by) {
    if (dim <= 0 || dim % over != 0) return;  // reported elsewhere
    if ((dim / over) % kBlock != 0) {
      p->push_back(absl::StrCat("precision.fp8_recipe blockwise: ", what, " ", dim,
                                over > 1 ? absl::StrCat(" / ", by, " ", over, " = ", dim / over)
                                         : std::string(),
                                " is not a multiple of the block size 128"));
    }
  };
  block("model.hidden_size", m.hidden_size(), 1, "");
  block("query width num_heads × head_dim", int64_t{m.num_heads()} * head_dim, tp, "tp");
  if (m.num_kv_heads() > 0 && m.num_heads() % std::max(m.num_kv_heads(), 1) == 0) {
    const int64_t qkv = int64_t{m.num_kv_heads()} * (m.num_heads() / m.num_kv_heads() + 2) * head_dim;
    block("fused QKV width", qkv, tp, "tp");
  }
  if (m.num_layers() > CountMoeLayers(c)) block("model.ffn_hidden_size", m.ffn_hidden_size(), tp, "tp");
  const MoeConfig& moe = m.moe();
  if (moe.num_experts() > 0 && CountMoeLayers(c) > 0) {
    block("model.moe.expert_ffn_hidden_size", moe.expert_ffn_hidden_size(), etp, "etp");
    if (moe.num_shared_experts() > 0) {
      const int64_t shared = int64_t{moe.num_shared_experts()} *
                             (moe.shared_expert_ffn_hidden_size() > 0
                                  ? moe.shared_expert_ffn_hidden_size()
                                  : moe.expert_ffn_hidden_size());
      block("shared experts' FFN width", shared, tp, "tp");
    }
  }
}

void CheckPrecision(const ExperimentConfig& c, Problems* p) {
  const PrecisionConfig& pr = c.precision();
  OneOf(p, "precision.compute_dtype", pr.compute_dtype(), {"f32", "bf16"});
  OneOf(p, "precision.fp8_recipe", pr.fp8_recipe(), {"none", "delayed", "current", "blockwise"});
  if (pr.fp8_recipe() == "none") return;
  OneOf(p, "precision.fp8_grad_format", pr.fp8_grad_format(), {"e5m2", "e4m3"});
  if (pr.fp8_recipe() == "delayed") Positive(p, "precision.amax_history", pr.amax_history());
  if (pr.fp8_recipe() == "blockwise") {
    CheckFp8Blocks(c, p);
  }
}

void CheckOtherSections(const ExperimentConfig& c, Problems* p) {
  CheckPrecision(c, p);
  OneOf(p, "memory.activation_policy", c.memory().activation_policy(),
        {"keep", "swap", "recompute"});
  CheckMemory(c.memory(), c.model().num_layers(), p);

  const CompressionConfig& comp = c.compression();
  OneOf(p, "compression.method", comp.method(), {"none", "ef21"});
  OneOf(p, "compression.compressor", comp.compressor(), {"identity", "int8", "fp8", "topk"});
  Fraction(p, "compression.topk_fraction", comp.topk_fraction(), /*allow_zero=*/false);
  Positive(p, "compression.block_size", comp.block_size());
  NonNegative(p, "compression.warm_start_steps", comp.warm_start_steps());
  NonNegative(p, "compression.reanchor_every", comp.reanchor_every());
  for (int i = 0; i < comp.rank_weights_size(); ++i) {
    Positive(p, absl::StrCat("compression.rank_weights[", i, "]"), comp.rank_weights(i));
  }

  const ReweightingConfig& rw = c.reweighting();
  OneOf(p, "reweighting.strategy", rw.strategy(),
        {"none", "linupper", "upper", "quadratic", "extremes"});
  Positive(p, "reweighting.temperature", rw.temperature());
  NonNegative(p, "reweighting.warmup_steps", rw.warmup_steps());
  NonNegative(p, "reweighting.warmup_temperature (0 = uniform)", rw.warmup_temperature());
  OneOf(p, "reweighting.population", rw.population(), {"global", "microbatch"});

  OneOf(p, "data.tokenizer", c.data().tokenizer(), {"byte", "hf", "sentencepiece"});
  if (c.data().tokenizer() != "byte" && c.data().tokenizer_path().empty()) {
    p->push_back(absl::StrCat("data.tokenizer \"", c.data().tokenizer(),
                              "\" needs data.tokenizer_path (tokenizer.json or a .model file)"));
  }
  if (!c.data().path().empty() && c.data().paths_size() > 0) {
    p->push_back("data.path and data.paths are both set: give one dataset or a blend");
  }
  Positive(p, "logging.log_every", c.logging().log_every());
  OneOf(p, "logging.progress", c.logging().progress(), {"auto", "always", "never"});
  for (int32_t step : c.logging().profile_steps()) {
    if (step < 0 || step >= c.train().steps()) {
      p->push_back(absl::StrCat("logging.profile_steps: step ", step, " is not in [0, train.steps ",
                                c.train().steps(), ")"));
    }
  }
  if (absl::StatusOr<std::optional<StepRange>> trace = ParseTraceSteps(c.logging().trace_steps());
      !trace.ok()) {
    p->push_back(std::string(trace.status().message()));
  } else if (*trace && (*trace)->first >= c.train().steps()) {
    p->push_back(absl::StrCat("logging.trace_steps: the first traced step ", (*trace)->first,
                              " is not in [0, train.steps ", c.train().steps(), ")"));
  }
  NonNegative(p, "checkpoint.every (0 = never)", c.checkpoint().every());
  NonNegative(p, "checkpoint.keep_last (0 = all)", c.checkpoint().keep_last());
  OneOf(p, "checkpoint.on_error", c.checkpoint().on_error(), {"stop", "warn"});
  if (c.checkpoint().dir().empty() && (c.checkpoint().every() > 0 || c.checkpoint().resume())) {
    p->push_back("checkpoint.every / checkpoint.resume need checkpoint.dir");
  }
}

}  // namespace

absl::StatusOr<std::optional<StepRange>> ParseTraceSteps(absl::string_view text) {
  if (text.empty()) return std::nullopt;
  const std::vector<absl::string_view> parts = absl::StrSplit(text, '-');
  StepRange range;
  auto digits = [](absl::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  };
  if (parts.size() != 2 || !digits(parts[0]) || !digits(parts[1]) ||
      !absl::SimpleAtoi(parts[0], &range.first) || !absl::SimpleAtoi(parts[1], &range.last)) {
    return absl::InvalidArgumentError(
        absl::StrCat("logging.trace_steps = \"", text,
                     "\" is not START-END (0-based steps, inclusive, e.g. \"5-6\")"));
  }
  if (range.first > range.last) {
    return absl::InvalidArgumentError(absl::StrCat("logging.trace_steps = \"", text, "\": START ",
                                                   range.first, " > END ", range.last));
  }
  return range;
}

int CountMoeLayers(const ExperimentConfig& config) {
  const MoeConfig& moe = config.model().moe();
  if (moe.num_experts() <= 0 || moe.layer_freq() <= 0) return 0;
  int count = 0;
  for (int l = std::max(0, moe.first_dense_layers()); l < config.model().num_layers(); ++l) {
    if ((l - moe.first_dense_layers()) % moe.layer_freq() == 0) ++count;
  }
  return count;
}

int DerivedDp(const ExperimentConfig& config, int world_size) {
  const ParallelConfig& p = config.parallel();
  if (p.dp() > 0) return p.dp();
  const int64_t divisor = int64_t{p.tp()} * p.cp() * p.pp();
  if (world_size <= 0 || p.tp() <= 0 || p.cp() <= 0 || p.pp() <= 0 || world_size % divisor != 0) {
    return 0;
  }
  return static_cast<int>(world_size / divisor);
}

int DerivedEdp(const ExperimentConfig& config, int world_size) {
  const ParallelConfig& p = config.parallel();
  const int64_t divisor = int64_t{p.etp()} * p.ep() * p.pp();
  if (world_size <= 0 || p.etp() <= 0 || p.ep() <= 0 || p.pp() <= 0 || world_size % divisor != 0) {
    return 0;
  }
  return static_cast<int>(world_size / divisor);
}

absl::StatusOr<std::vector<int>> StageLayerCounts(const ExperimentConfig& config) {
  const ParallelConfig& par = config.parallel();
  const int layers = config.model().num_layers();
  // In 64 bits: pp × virtual_stages of a bad config may overflow an int, and nothing is sized by
  // the stage count before the split is known to give every stage a layer (so stages <= layers).
  const int64_t stages = int64_t{par.pp()} * par.virtual_stages();
  if (stages < 1 || layers < 1) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline: ", layers, " layers over ", stages,
                                                   " stages"));
  }
  const int first = par.first_stage_layers(), last = par.last_stage_layers();
  if (stages == 1) return std::vector<int>{layers};  // one stage holds everything
  int64_t rest = layers, middle = stages;
  if (first > 0) {
    rest -= first;
    --middle;
  }
  if (last > 0) {
    rest -= last;
    --middle;
  }
  const std::string fixed =
      first > 0 || last > 0
          ? absl::StrCat(" (after first_stage_layers ", first, " and last_stage_layers ", last, ")")
          : "";
  if (rest < 0 || (middle == 0 && rest != 0) || (middle > 0 && rest % middle != 0) ||
      (middle > 0 && rest / middle == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.num_layers ", layers, fixed, ": ", rest, " layers do not split evenly over ",
        middle, " of pp ", par.pp(), " × virtual_stages ", par.virtual_stages(), " = ", stages,
        " stages", middle > 0 && rest >= 0 ? absl::StrCat(" (", rest, " % ", middle, " = ",
                                                          rest % middle, ")")
                                           : std::string()));
  }
  std::vector<int> counts(stages, middle > 0 ? static_cast<int>(rest / middle) : 0);
  if (first > 0) counts.front() = first;
  if (last > 0) counts.back() = last;
  return counts;
}

namespace {

struct RegisteredChecks {
  std::mutex mutex;
  std::map<std::string, ExperimentCheck> checks;  // guarded by mutex
};

RegisteredChecks& Registry() {
  static RegisteredChecks* registry = new RegisteredChecks;  // never destroyed: used at exit
  return *registry;
}

}  // namespace

void RegisterExperimentCheck(const std::string& name, ExperimentCheck check) {
  RegisteredChecks& r = Registry();
  const std::lock_guard<std::mutex> lock(r.mutex);
  r.checks[name] = std::move(check);
}

absl::Status Validate(const ExperimentConfig& config, int world_size) {
  Problems problems;
  CheckModel(config, &problems);
  CheckMoe(config, &problems);
  CheckParallel(config, world_size, &problems);
  CheckTrainAndOptimizer(config, &problems);
  CheckOtherSections(config, &problems);
  if (problems.empty()) {
    RegisteredChecks& r = Registry();
    const std::lock_guard<std::mutex> lock(r.mutex);
    for (const auto& [name, check] : r.checks) check(config, world_size, &problems);
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("- ", absl::StrJoin(problems, "\n- ")));
}

}  // namespace moefold::config
